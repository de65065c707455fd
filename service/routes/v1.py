"""The convscope REST API (v1): predictions, feature maps, filters, model discovery.

Routes parse HTTP, hold the model they serve for the length of the request, and call the
data plane (through ``predictions`` for the answers' shape); nothing else happens here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from service.codecs.encoding import Encoding, FilterState, NpyDtype
from service.errors import BadRequest
from service.http import auth
from service.http.requests import images_from_request, unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.dataplane import DataPlane
from service.routes import schemas
from service.routes.common import MAX_VERSION, Plane, ascii_version, note_model, server_timing
from service.routes.predictions import PredictQuery, layer_catalogue, model_metadata, predict

router = APIRouter(tags=["v1"], dependencies=[auth.INFER])

ModelName = Annotated[str, Path(description="Model name (a directory of the model repository).")]
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Model version (an integer directory)."),
                    BeforeValidator(ascii_version)]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Model version (default: newest ready)."),
                         BeforeValidator(ascii_version)]
LayerName = Annotated[str, Path(description="Layer name as listed by GET /v1/models/{name}/layers.")]


def predict_query(
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


async def _predict(request: Request, plane: DataPlane, name: str | None, version: int | None,
                   query: PredictQuery) -> Response:
    note_model(request, name, version)
    images = await images_from_request(request, plane)
    with plane.serving(name, version) as model:
        note_model(request, model.name, model.version)
        body, timings = await unless_client_gone(request, predict(plane, model, images, query))
    body["timings_ms"] = timings.as_ms()
    return JSONResponse(body, headers={"Server-Timing": server_timing(timings)})


PREDICT_DOC: dict[str, Any] = dict(response_model=schemas.PredictResponse, responses=schemas.ERRORS,
                                   openapi_extra=IMAGE_BODY)


@router.post("/predict", summary="Classify with the default model", **PREDICT_DOC)
async def predict_default(request: Request, plane: Plane, query: Predict) -> Response:
    return await _predict(request, plane, None, None, query)


@router.post("/v1/models/{name}/predict", summary="Classify (newest version)", **PREDICT_DOC)
async def predict_newest(request: Request, plane: Plane, name: ModelName, query: Predict) -> Response:
    return await _predict(request, plane, name, None, query)


@router.post("/v1/models/{name}/versions/{version}/predict", summary="Classify (one version)", **PREDICT_DOC)
async def predict_version(request: Request, plane: Plane, name: ModelName, version: Version,
                          query: Predict) -> Response:
    return await _predict(request, plane, name, version, query)


async def _feature_map_png(request: Request, plane: DataPlane, name: str, version: int | None, layer: str) -> Response:
    note_model(request, name, version)
    images = await images_from_request(request, plane)
    if len(images) != 1:
        raise BadRequest(f"send exactly one image for a feature-map picture, not {len(images)}")
    with plane.serving(name, version) as model:
        note_model(request, model.name, model.version)
        png, info = await unless_client_gone(request, plane.feature_map_png(model, layer, images[0]))
    return Response(png, media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@router.post("/v1/models/{name}/layers/{layer}/feature_maps.png", summary="One layer's feature maps as a PNG grid",
             response_class=Response, responses=PNG_RESPONSE, openapi_extra=ONE_IMAGE_BODY)
async def feature_maps_png(request: Request, plane: Plane, name: ModelName, layer: LayerName) -> Response:
    return await _feature_map_png(request, plane, name, None, layer)


@router.post("/v1/models/{name}/versions/{version}/layers/{layer}/feature_maps.png",
             summary="One layer's feature maps as a PNG grid (one version)",
             response_class=Response, responses=PNG_RESPONSE, openapi_extra=ONE_IMAGE_BODY)
async def feature_maps_png_version(request: Request, plane: Plane, name: ModelName, version: Version,
                                   layer: LayerName) -> Response:
    return await _feature_map_png(request, plane, name, version, layer)


@router.get("/v1/models/{name}/layers/{layer}/filters.png", summary="A conv layer's filters as a PNG grid",
            response_class=Response, responses=PNG_RESPONSE)
async def filters_png(request: Request, plane: Plane, name: ModelName, layer: LayerName,
                      state: FilterStateQuery = FilterState.TRAINED, version: VersionQuery = None) -> Response:
    note_model(request, name, version)
    with plane.serving(name, version) as model:
        png, info = plane.filters_png(model, layer, state)
    return Response(png, media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@router.get("/v1/models", response_model=schemas.ModelList, summary="Every model, its versions and their state")
async def list_models(plane: Plane) -> Response:
    return JSONResponse({"models": plane.registry.status()})


@router.get("/v1/models/{name}", summary="A model's metadata (newest version)", responses=schemas.ERRORS)
async def model_metadata_newest(request: Request, plane: Plane, name: ModelName) -> Response:
    return _metadata(request, plane, name, None)


@router.get("/v1/models/{name}/versions/{version}", summary="A model version's metadata", responses=schemas.ERRORS)
async def model_metadata_version(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return _metadata(request, plane, name, version)


def _metadata(request: Request, plane: DataPlane, name: str, version: int | None) -> Response:
    note_model(request, name, version)
    with plane.serving(name, version) as model:
        return JSONResponse(model_metadata(model, plane.registry.versions(name)))


@router.get("/v1/models/{name}/layers", response_model=schemas.LayerList, responses=schemas.ERRORS,
            summary="The layer names valid for `layers=`, shallow to deep, with shapes")
async def list_layers(request: Request, plane: Plane, name: ModelName, version: VersionQuery = None) -> Response:
    note_model(request, name, version)
    with plane.serving(name, version) as model:
        return JSONResponse(layer_catalogue(model))
