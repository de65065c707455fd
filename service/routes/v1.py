"""The convscope REST API (v1): predictions, feature maps, filters, model discovery.

Each operation reads the request, calls its handler (which holds the version for the call)
and renders the result with the v1 codec; nothing else happens here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.codecs import v1
from service.codecs.arrays import Encoding, NpyDtype
from service.codecs.pictures import feature_map_grid, filters_grid, png_bytes
from service.handlers.introspection import FilterState
from service.http import auth
from service.http.requests import RequestReader, unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.routes import schemas
from service.routes.deps import HandlersDep, WorkersDep, answered_by, note_model, server_timing
from service.routes.direct import DirectRoute
from service.routes.params import LayerName, ModelName, Version, VersionQuery
from service.routes.table import ModelRoutes, VersionParameter

router = APIRouter(tags=["v1"], dependencies=[auth.INFER], route_class=DirectRoute)
models = ModelRoutes(router, "/v1/models/{name}", VersionParameter(Version), alias=VersionQuery)


async def get_reader(request: Request) -> RequestReader:
    reader: RequestReader = request.app.state.reader
    return reader


Reader = Annotated[RequestReader, Depends(get_reader)]


@dataclass(frozen=True)
class PredictQuery:
    top_k: int = 5
    layers: tuple[str, ...] = ()  # as given: names, comma-separated names, or "all"
    encoding: Encoding = Encoding.STATS
    dtype: NpyDtype = NpyDtype.FLOAT32


async def predict_query(
    top_k: Annotated[int, Query(ge=1, le=1000, description="How many classes to return, best first.")] = 5,
    layers: Annotated[
        list[str] | None,
        Query(description="Layers whose feature maps to return: names (repeat the parameter, or separate "
                          "with commas), or `all`. Valid names: GET /v1/models/{name}/layers."),
    ] = None,
    encoding: Annotated[
        Encoding,
        Query(description="stats: per-channel min/max/mean; png: one grid image per layer; "
                          "npy: .npy bytes; json: nested lists (small layers). Binary data is base64."),
    ] = Encoding.STATS,
    dtype: Annotated[NpyDtype, Query(description="Element type of npy maps.")] = NpyDtype.FLOAT32,
) -> PredictQuery:
    return PredictQuery(top_k, tuple(layers or ()), encoding, dtype)


Predict = Annotated[PredictQuery, Depends(predict_query)]
FilterStateQuery = Annotated[
    FilterState,
    Query(description="trained: the learned kernels; initial: the random kernels before training."),
]

def _image_body(most: int | None) -> dict[str, Any]:
    """The request body of a route that takes images: ``most`` of them (None: the server's limit)."""
    binary = {"type": "string", "format": "binary"}
    base64 = {"type": "string", "format": "byte", "minLength": 1}
    many = {"maxItems": most} if most else {}
    return {
        "requestBody": {
            "required": True,
            "description": ("One image as the raw body, several as multipart parts named `image`, "
                            'or JSON `{"image": "<base64>"}` / `{"images": ["<base64>", ...]}`.'
                            if most != 1 else
                            'One image: the raw body, one multipart part named `image`, or JSON `{"image": "<base64>"}`.'),
            "content": {
                "image/*": {"schema": binary},
                "application/octet-stream": {"schema": binary},
                "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
                    "image": {"type": "array", "minItems": 1, **many, "items": binary}}}},
                "application/json": {"schema": {
                    "type": "object",
                    "properties": {"image": base64, "images": {"type": "array", "minItems": 1, **many, "items": base64}},
                    "oneOf": [{"required": ["image"]}, {"required": ["images"]}],
                }},
            },
        }
    }


IMAGE_BODY = _image_body(None)
ONE_IMAGE_BODY = _image_body(1)
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image."},
    **schemas.ERRORS,
}
PREDICT_DOC: dict[str, Any] = dict(response_model=schemas.PredictResponse, responses=schemas.ERRORS,
                                   openapi_extra=IMAGE_BODY)


async def predict(request: Request, handlers: HandlersDep, workers: WorkersDep, reader: Reader,
                  name: ModelName, version: int | None, query: Predict) -> Response:
    note_model(request, name, version)
    images = await reader.images(request)
    result = await unless_client_gone(request, handlers.inference.predict(
        name, version, images, query.layers, query.encoding, query.dtype))
    answered_by(request, result.model)
    started = time.perf_counter()
    body = await workers.offload(v1.predictions, result, query.top_k, query.encoding, query.dtype,
                                 size=sum(m.size for m in result.maps.values()))
    result.timings.encode = time.perf_counter() - started
    body["timings_ms"] = timings = result.timings.as_ms()
    return JSONResponse(body, headers={"Server-Timing": server_timing(timings)})


models.default("POST", "/predict", summary="Classify with the default model", **PREDICT_DOC)(predict)
models.operation("POST", "/predict", summary="Classify", **PREDICT_DOC)(predict)


@models.operation("POST", "/layers/{layer}/feature_maps.png", summary="One layer's feature maps as a PNG grid",
                  response_class=Response, responses=PNG_RESPONSE, openapi_extra=ONE_IMAGE_BODY)
async def feature_maps_png(request: Request, handlers: HandlersDep, workers: WorkersDep, reader: Reader,
                           name: ModelName, version: int | None, layer: LayerName) -> Response:
    note_model(request, name, version)
    image = await reader.one_image(request, "for a feature-map picture")
    result = await unless_client_gone(request, handlers.inference.feature_map(name, version, layer, image))
    answered_by(request, result.model)
    grid, info = await workers.offload(feature_map_grid, result.values, size=result.values.size)
    return Response(png_bytes(grid), media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@models.operation("GET", "/layers/{layer}/filters.png", summary="A conv layer's filters as a PNG grid",
                  alias_query=True, response_class=Response, responses=PNG_RESPONSE)
async def filters_png(request: Request, handlers: HandlersDep, name: ModelName, version: int | None,
                      layer: LayerName, state: FilterStateQuery = FilterState.TRAINED) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.filters(name, version, layer, state)
    answered_by(request, result.model)
    grid, info = filters_grid(result.weights)
    return Response(png_bytes(grid), media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@router.get("/v1/models", response_model=schemas.ModelList, summary="Every model, its versions and their state")
async def list_models(handlers: HandlersDep) -> Response:
    return JSONResponse(v1.models(handlers.introspection.models()))


@models.operation("GET", "", summary="A model's metadata", responses=schemas.ERRORS)
async def metadata(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.describe(name, version)
    answered_by(request, result.model)
    return JSONResponse(v1.description(result))


@models.operation("GET", "/layers", summary="The layer names valid for `layers=`, shallow to deep, with shapes",
                  alias_query=True, response_model=schemas.LayerList, responses=schemas.ERRORS)
async def layers(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.layers(name, version)
    answered_by(request, result.model)
    return JSONResponse(v1.layer_catalogue(result))


@models.operation("GET", "/quantization", summary="An int8 version: how it was quantized, the gate's figures and "
                                                  "every layer's error against its float version",
                  response_model=schemas.QuantizationAnswer, responses=schemas.ERRORS)
async def quantization(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.quantization(name, version)
    answered_by(request, result.model)
    return JSONResponse(v1.quantization(result))
