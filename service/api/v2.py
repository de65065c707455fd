"""The Open Inference Protocol (KServe v2 / Triton) REST API.

Routes parse HTTP and call the codec (service.inference_protocol) and the data plane;
nothing else happens here. Stock clients (``tritonclient.http``) work unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from service import inference_protocol as oip
from service.api import schemas
from service.api.requests import ClientGone, read_body, unless_client_gone
from service.api.responses import FastJSONResponse as JSONResponse
from service.api.v1 import Plane, note_model, server_timing

router = APIRouter(tags=["v2"])

ModelName = Annotated[str, Path(description="Model name (a directory of the model repository).")]
Version = Annotated[str, Path(description="Model version: a positive integer, as a string.")]

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An $inference_request (JSON), optionally followed by binary tensor data whose "
                       "JSON part is Inference-Header-Content-Length bytes long. Inputs: the model's FP32 "
                       "tensor [N, C, H, W], or `image_bytes` (BYTES [N]: encoded images; base64 in JSON).",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An $inference_response; JSON, or JSON then binary data (application/octet-stream, "
                         "with Inference-Header-Content-Length) when any output is binary.",
          "content": {"application/json": {}, "application/octet-stream": {}}},
    **schemas.ERRORS,
}


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> Response:
    return JSONResponse(oip.server_metadata())


@router.get("/v2/health/live", summary="Server live")
async def live() -> Response:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", summary="Server ready: loading has finished and a model serves")
async def ready(plane: Plane) -> Response:
    is_ready, detail = plane.readiness()
    if is_ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": detail}, status_code=503)


async def _metadata(request: Request, plane: Plane, name: str, version: str | None) -> Response:
    number = oip.parse_version(version)
    note_model(request, name, number)
    return JSONResponse(oip.model_metadata(plane.metadata(name, number)))


@router.get("/v2/models/{name}", summary="Model metadata (newest ready version)", responses=schemas.ERRORS)
async def model_metadata(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _metadata(request, plane, name, None)


@router.get("/v2/models/{name}/versions/{version}", summary="Model version metadata", responses=schemas.ERRORS)
async def model_version_metadata(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _metadata(request, plane, name, version)


async def _ready(request: Request, plane: Plane, name: str, version: str | None) -> Response:
    number = oip.parse_version(version)
    note_model(request, name, number)
    status, body = oip.model_ready(plane, name, number)
    return JSONResponse(body, status_code=status)


@router.get("/v2/models/{name}/ready", summary="Model ready", responses=schemas.ERRORS)
async def model_ready(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _ready(request, plane, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", summary="Model version ready", responses=schemas.ERRORS)
async def model_version_ready(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _ready(request, plane, name, version)


async def _infer(request: Request, plane: Plane, name: str, version: str | None) -> Response:
    number = oip.parse_version(version)
    note_model(request, name, number)
    body = await read_body(request, plane.settings.max_body_bytes)
    try:
        encoded, timings = await unless_client_gone(request, oip.infer(plane, name, number, body, request.headers))
    except ClientGone:
        return Response(status_code=499)  # nobody reads it; counted as a dropped request
    headers = {**encoded.headers, "Server-Timing": server_timing(timings)}
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


@router.post("/v2/models/{name}/infer", summary="Inference (newest ready version)",
             response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _infer(request, plane, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference (one version)",
             response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer_version(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _infer(request, plane, name, version)
