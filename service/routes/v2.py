"""The Open Inference Protocol (KServe v2 / Triton) REST API.

An infer route is codec -> handler -> codec: the handler parses the request against the
version's signature (the protocol codec, service.codecs.oip), runs it through the data plane
exactly as v1 requests run (same batcher, limits and checks), and the codec builds the
answer. Stock clients (``tritonclient.http``) work unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.codecs import oip
from service.http import auth
from service.http.drain import readiness
from service.http.requests import unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.routes import schemas
from service.routes.deps import HandlersDep, WorkersDep, answered_by, note_model, server_timing
from service.routes.direct import DirectRoute
from service.routes.params import ModelName, ProtocolVersion
from service.routes.table import ModelRoutes, VersionParameter
from service.routes.v1 import Reader

router = APIRouter(tags=["v2"], dependencies=[auth.INFER], route_class=DirectRoute)
health = APIRouter(tags=["v2"], dependencies=[auth.PROBE])  # probes: no key, answered while draining
models = ModelRoutes(router, "/v2/models/{name}", VersionParameter(ProtocolVersion, oip.parse_version))

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An $inference_request (JSON), optionally followed by binary tensor data whose "
                       "JSON part is Inference-Header-Content-Length bytes long. Inputs: the model's FP32 "
                       "tensor [N, C, H, W], or `image_bytes` (BYTES [N]: encoded images; base64 in JSON).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
# $inference_request of the protocol, as the codec reads it. Which input and output names
# and shapes a model takes is per model: GET /v2/models/{name} lists them.
_PARAMETERS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
INFERENCE_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {**_PARAMETERS, "properties": {"binary_data_output": {"type": "boolean"}}},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "properties": {
                "name": {"type": "string", "description": "The model's FP32 input, or image_bytes."},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"type": "string", "enum": list(oip.DATATYPES)},
                "parameters": {**_PARAMETERS, "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
                "data": {"type": "array", "description": "Row-major values; BYTES: base64 strings."},
            },
        }},
        "outputs": {"type": "array", "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "parameters": {**_PARAMETERS, "properties": {
                    "binary_data": {"type": "boolean"}, "classification": {"type": "integer", "minimum": 0}}},
            },
        }},
    },
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


@health.get("/v2/health/live", summary="Server live")
async def live() -> Response:
    return JSONResponse({"live": True})


@health.get("/v2/health/ready", responses={503: {"description": "Not ready, or draining before exit."}},
            summary="Server ready: loading has finished, a model serves, no drain has begun")
async def ready(request: Request, handlers: HandlersDep) -> Response:
    is_ready, detail = readiness(request, handlers.repository)
    if is_ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": detail}, status_code=503)


@models.operation("GET", "", summary="Model metadata", responses=schemas.ERRORS)
async def model_metadata(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.describe(name, version)
    answered_by(request, result.model)
    return JSONResponse(oip.model_metadata(result.signature, result.available_versions))


@models.operation("GET", "/ready", summary="Model ready", responses=schemas.ERRORS)
async def model_ready(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    """200 when ready, 503 while loading or failed; an unknown model or version is a 404."""
    note_model(request, name, version)
    not_ready = handlers.repository.ready(name, version)
    if not_ready is not None:
        return JSONResponse({"name": name, "ready": False, "error": not_ready.message}, status_code=503)
    return JSONResponse({"name": name, "ready": True})


@models.operation("POST", "/infer", summary="Inference", response_class=Response, responses=INFER_RESPONSES,
                  openapi_extra=INFER_BODY)
async def infer(request: Request, handlers: HandlersDep, workers: WorkersDep, reader: Reader, name: ModelName,
                version: int | None) -> Response:
    note_model(request, name, version)
    body = await reader.body(request)
    result = await unless_client_gone(request, handlers.inference.infer(
        name, version, body, request.headers.get("content-encoding"), request.headers.get(oip.HEADER_LENGTH)))
    answered_by(request, result.model)
    started = time.perf_counter()
    encoded = await workers.offload(oip.build_response, result.signature, result.request, result.outputs,
                                    size=sum(v.size for v in result.outputs.values()))
    result.timings.encode = time.perf_counter() - started
    headers = {**encoded.headers, "Server-Timing": server_timing(result.timings)}
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)
