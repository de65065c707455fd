"""The Open Inference Protocol (KServe v2 / Triton) REST API.

An infer route is codec -> data plane -> codec: the codec (service.codecs.oip)
parses the request against the model's signature, the data plane runs it exactly as it
runs v1 requests (same batcher, limits and checks), the codec builds the answer. Stock
clients (``tritonclient.http``) work unchanged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from service.codecs import oip as oip
from service.codecs.encoding import Encoding, NpyDtype
from service.errors import ModelNotReady
from service.http import auth
from service.http.requests import read_body, unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.dataplane import DataPlane, ImageInputs, Inputs, TensorInputs, Timings
from service.models.registry import ServedModel
from service.models.signature import ModelSignature
from service.routes import schemas
from service.routes.common import Plane, note_model, readiness, server_timing

router = APIRouter(tags=["v2"], dependencies=[auth.INFER])
health = APIRouter(tags=["v2"], dependencies=[auth.PROBE])  # probes: no key, answered while draining

ModelName = Annotated[str, Path(description="Model name (a directory of the model repository).")]
# What parse_version accepts (1 to 9 digits, not all zeros), declared for clients; it
# enforces it with the protocol's 400.
Version = Annotated[str, Path(json_schema_extra={"pattern": "^0*[1-9][0-9]*$", "maxLength": 9},
                              description="Model version: a positive integer, as a string.")]

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
async def ready(request: Request) -> Response:
    is_ready, detail = readiness(request)
    if is_ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": detail}, status_code=503)


async def _metadata(request: Request, plane: DataPlane, name: str, version: str | None) -> Response:
    number = oip.parse_version(version)
    note_model(request, name, number)
    with plane.serving(name, number) as model:
        return JSONResponse(oip.model_metadata(model.signature, plane.registry.versions(name)))


@router.get("/v2/models/{name}", summary="Model metadata (newest ready version)", responses=schemas.ERRORS)
async def model_metadata(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _metadata(request, plane, name, None)


@router.get("/v2/models/{name}/versions/{version}", summary="Model version metadata", responses=schemas.ERRORS)
async def model_version_metadata(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _metadata(request, plane, name, version)


async def _ready(request: Request, plane: DataPlane, name: str, version: str | None) -> Response:
    """200 when ready, 503 while loading or failed; an unknown model or version is a 404."""
    number = oip.parse_version(version)
    note_model(request, name, number)
    try:
        plane.registry.resolve(name, number)
    except ModelNotReady as exc:
        return JSONResponse({"name": name, "ready": False, "error": exc.message}, status_code=503)
    return JSONResponse({"name": name, "ready": True})


@router.get("/v2/models/{name}/ready", summary="Model ready", responses=schemas.ERRORS)
async def model_ready(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _ready(request, plane, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", summary="Model version ready", responses=schemas.ERRORS)
async def model_version_ready(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _ready(request, plane, name, version)


async def _infer(request: Request, plane: DataPlane, name: str, version: str | None) -> Response:
    number = oip.parse_version(version)
    note_model(request, name, number)
    body = await read_body(request, plane.settings.max_body_bytes)
    with plane.serving(name, number) as model:
        encoded, timings = await unless_client_gone(request, _infer_with(plane, model, body, request))
    headers = {**encoded.headers, "Server-Timing": server_timing(timings)}
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


async def _infer_with(plane: DataPlane, model: ServedModel, body: bytes,
                      request: Request) -> tuple[oip.EncodedResponse, Timings]:
    signature = model.signature
    started = time.perf_counter()
    parsed = await plane.parse(_parse, body, request.headers.get("content-encoding"),
                               request.headers.get(oip.HEADER_LENGTH), signature, plane, size=len(body))
    parse_seconds = time.perf_counter() - started
    layers = parsed.layers(signature)
    if layers:
        encoding = Encoding.NPY if parsed.binary_layers(signature) else Encoding.JSON
        plane.check_budget(signature, layers, parsed.batch_size, encoding, NpyDtype.FLOAT32)
    inputs: Inputs = ImageInputs(parsed.data) if isinstance(parsed.data, list) else TensorInputs(parsed.data)
    result = await plane.run(model, inputs, parsed.run_outputs(signature))
    timings = result.timings
    timings.decode += parse_seconds
    started = time.perf_counter()
    encoded = await asyncio.to_thread(oip.build_response, signature, parsed, result.outputs)
    timings.encode = time.perf_counter() - started
    return encoded, timings


def _parse(body: bytes, content_encoding: str | None, header_length: str | None, signature: ModelSignature,
           plane: DataPlane) -> oip.InferenceRequest:
    settings = plane.settings
    body = oip.decompress(body, content_encoding, settings.max_body_bytes)
    return oip.parse_request(body, header_length, signature, plane.check_count, settings.max_images_per_request)


@router.post("/v2/models/{name}/infer", summary="Inference (newest ready version)",
             response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _infer(request, plane, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference (one version)",
             response_class=Response, responses=INFER_RESPONSES, openapi_extra=INFER_BODY)
async def infer_version(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _infer(request, plane, name, version)
