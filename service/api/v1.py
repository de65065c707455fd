"""The convscope REST API (v1): predictions, feature maps, filters, model discovery.

Routes parse HTTP and call the data plane; nothing else happens here.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service.api import schemas
from service.api.requests import ClientGone, images_from_request, unless_client_gone
from service.api.responses import FastJSONResponse as JSONResponse
from service.dataplane import DataPlane, Timings
from service.errors import BadRequest

router = APIRouter(tags=["v1"])


def get_dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


Plane = Annotated[DataPlane, Depends(get_dataplane)]
ModelName = Annotated[str, Path(description="Model name (a directory of the model repository).")]
Version = Annotated[int, Path(ge=1, description="Model version (an integer directory).")]
LayerName = Annotated[str, Path(description="Layer name as listed by GET /v1/models/{name}/layers.")]
TopK = Annotated[int, Query(ge=1, le=1000, description="How many classes to return, best first.")]
Layers = Annotated[
    str | None,
    Query(description="Comma-separated layer names whose feature maps to return, or `all`."),
]
MapEncoding = Annotated[
    Literal["stats", "png", "npy", "json"],
    Query(description="stats: per-channel min/max/mean; png: one grid image per layer; "
                      "npy: .npy bytes; json: nested lists (small layers). Binary data is base64."),
]
NpyDtype = Annotated[Literal["float16", "float32"], Query(description="Element type of npy maps.")]
FilterState = Annotated[
    Literal["trained", "initial"],
    Query(description="trained: the learned kernels; initial: the random kernels before training."),
]

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, several as multipart parts named `image`, "
                       'or JSON `{"image": "<base64>"}` / `{"images": ["<base64>", ...]}`.',
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {
                    "image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
            },
            "application/json": {
                "schema": {"type": "object", "properties": {
                    "image": {"type": "string", "format": "byte"},
                    "images": {"type": "array", "items": {"type": "string", "format": "byte"}}}}
            },
        },
    }
}
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A PNG image."},
    **schemas.ERRORS,
}


def server_timing(timings: Timings) -> str:
    return ", ".join(f"{k};dur={v}" for k, v in timings.as_ms().items())


def note_model(request: Request, name: str | None, version: int | None) -> None:
    """Tell the metrics middleware which model this request was for."""
    request.state.model = name
    request.state.version = version


async def _predict(
    request: Request, plane: DataPlane, name: str | None, version: int | None,
    top_k: int, layers: str | None, encoding: str, dtype: str,
) -> Response:
    note_model(request, name, version)
    images = await images_from_request(request, plane.settings.max_body_bytes)
    try:
        body, timings = await unless_client_gone(
            request,
            plane.predict(name, version, images, top_k=top_k, layers=layers, encoding=encoding, dtype=dtype),
        )
    except ClientGone:
        return Response(status_code=499)  # nobody reads it; counted as a dropped request
    note_model(request, body["model"], body["version"])
    body["timings_ms"] = timings.as_ms()
    return JSONResponse(body, headers={"Server-Timing": server_timing(timings)})


PREDICT_DOC = dict(response_model=schemas.PredictResponse, responses=schemas.ERRORS, openapi_extra=IMAGE_BODY)


@router.post("/predict", summary="Classify with the default model", **PREDICT_DOC)
async def predict_default(request: Request, plane: Plane, top_k: TopK = 5, layers: Layers = None,
                          encoding: MapEncoding = "stats", dtype: NpyDtype = "float32") -> Response:
    return await _predict(request, plane, None, None, top_k, layers, encoding, dtype)


@router.post("/v1/models/{name}/predict", summary="Classify (newest version)", **PREDICT_DOC)
async def predict(request: Request, plane: Plane, name: ModelName, top_k: TopK = 5, layers: Layers = None,
                  encoding: MapEncoding = "stats", dtype: NpyDtype = "float32") -> Response:
    return await _predict(request, plane, name, None, top_k, layers, encoding, dtype)


@router.post("/v1/models/{name}/versions/{version}/predict", summary="Classify (one version)", **PREDICT_DOC)
async def predict_version(request: Request, plane: Plane, name: ModelName, version: Version, top_k: TopK = 5,
                          layers: Layers = None, encoding: MapEncoding = "stats",
                          dtype: NpyDtype = "float32") -> Response:
    return await _predict(request, plane, name, version, top_k, layers, encoding, dtype)


async def _feature_map_png(request: Request, plane: DataPlane, name: str, version: int | None, layer: str) -> Response:
    note_model(request, name, version)
    images = await images_from_request(request, plane.settings.max_body_bytes)
    if len(images) != 1:
        raise BadRequest(f"send exactly one image for a feature-map picture, not {len(images)}")
    try:
        png, info = await unless_client_gone(request, plane.feature_map_png(name, version, layer, images[0]))
    except ClientGone:
        return Response(status_code=499)
    return Response(png, media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@router.post("/v1/models/{name}/layers/{layer}/feature_maps.png", summary="One layer's feature maps as a PNG grid",
             response_class=Response, responses=PNG_RESPONSE, openapi_extra=IMAGE_BODY)
async def feature_maps_png(request: Request, plane: Plane, name: ModelName, layer: LayerName) -> Response:
    return await _feature_map_png(request, plane, name, None, layer)


@router.post("/v1/models/{name}/versions/{version}/layers/{layer}/feature_maps.png",
             summary="One layer's feature maps as a PNG grid (one version)",
             response_class=Response, responses=PNG_RESPONSE, openapi_extra=IMAGE_BODY)
async def feature_maps_png_version(request: Request, plane: Plane, name: ModelName, version: Version,
                                   layer: LayerName) -> Response:
    return await _feature_map_png(request, plane, name, version, layer)


@router.get("/v1/models/{name}/layers/{layer}/filters.png", summary="A conv layer's filters as a PNG grid",
            response_class=Response, responses=PNG_RESPONSE)
async def filters_png(request: Request, plane: Plane, name: ModelName, layer: LayerName,
                      state: FilterState = "trained", version: Annotated[int | None, Query(ge=1)] = None) -> Response:
    note_model(request, name, version)
    png, info = plane.filters_png(name, version, layer, state)
    return Response(png, media_type="image/png", headers={"X-Convscope-Grid": json.dumps(info)})


@router.get("/v1/models", response_model=schemas.ModelList, summary="Every model, its versions and their state")
async def list_models(plane: Plane) -> Response:
    return JSONResponse({"models": plane.list_models()})


@router.get("/v1/models/{name}", summary="A model's metadata (newest version)", responses=schemas.ERRORS)
async def model_metadata(request: Request, plane: Plane, name: ModelName) -> Response:
    note_model(request, name, None)
    return JSONResponse(plane.metadata(name))


@router.get("/v1/models/{name}/versions/{version}", summary="A model version's metadata", responses=schemas.ERRORS)
async def model_version_metadata(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    note_model(request, name, version)
    return JSONResponse(plane.metadata(name, version))


@router.get("/v1/models/{name}/layers", response_model=schemas.LayerList, responses=schemas.ERRORS,
            summary="The layer names valid for `layers=`, shallow to deep, with shapes")
async def list_layers(request: Request, plane: Plane, name: ModelName,
                      version: Annotated[int | None, Query(ge=1)] = None) -> Response:
    note_model(request, name, version)
    model = plane.model(name, version)
    keys = ("name", "op", "kind", "output_shape", "params", "receptive_field", "stride")
    layers = [{**{k: layer.get(k) for k in keys}, "has_filters": layer["name"] in model.filters}
              for layer in model.metadata["layers"]]
    return JSONResponse({"model": model.name, "version": model.version, "layers": layers})
