"""Explanations over HTTP (issue 12): which part of an image made the model decide, and how
far to trust the map.

``POST /explain`` (default model), ``/v1/models/{name}/explain`` and
``/v1/models/{name}/versions/{version}/explain`` answer JSON; the ``.png`` variants answer
the heat-map overlay itself. The body is one image in any form ``/predict`` accepts. Routes
parse HTTP, hold the model for the length of the request, and call the data plane's
``explain``; shaping the answer lives here, next to the API it serves.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.codecs import encoding as enc
from service.errors import BadRequest
from service.explain import ExplainRequest, Faithfulness, Method
from service.http import auth
from service.http.requests import images_from_request, unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.dataplane import DataPlane, ExplainResult
from service.inference.preprocessing import InputSpec
from service.routes import schemas
from service.routes.common import Plane, note_model, server_timing
from service.routes.v1 import ONE_IMAGE_BODY, ModelName, Version

router = APIRouter(tags=["explanations"], dependencies=[auth.INFER])

MAX_SEED = 2**32 - 1
MAX_TARGET_CHARS = 256


class MapEncoding(StrEnum):
    """How the map travels in a JSON answer (as a feature map does in predict's)."""

    JSON = "json"  # nested lists, H x W
    NPY = "npy"  # base64 .npy bytes, float32
    PNG = "png"  # base64 PNG: the map as heat over the preprocessed input image


class Colormap(StrEnum):
    INFERNO = "inferno"
    VIRIDIS = "viridis"


@dataclass(frozen=True)
class ExplainQuery:
    request: ExplainRequest
    encoding: MapEncoding
    colormap: Colormap


PASSES_DESCRIPTION = (
    "Upper bound on forward passes, all included (the image, the method's, faithfulness's 58). Left out: the "
    "method's default cost. Bounded by the server's CONVSCOPE_MAX_EXPLAIN_PASSES (over it: 422 naming the "
    "limit); below the method's least (occlusion 2 x 2 windows, RISE 16 masks, score-cam 1 channel, plus "
    "1 + 58): 422 naming the least."
)


def common_query(
    method: Annotated[
        Method | None,
        Query(description="occlusion (default: the most faithful at a moderate cost, on every model), rise, "
                          "score-cam, grad-cam (classic: channel weights = the exact gradient averaged over "
                          "positions), hires-cam (gradient x activation per position), eigen-cam (not "
                          "class-specific). Which a model allows: GET /v1/models/{name}/layers."),
    ] = None,
    target: Annotated[
        str | None,
        Query(max_length=MAX_TARGET_CHARS,
              description="The class to explain: its index or its label (default: the top-1 class)."),
    ] = None,
    layer: Annotated[
        str | None,
        Query(max_length=MAX_TARGET_CHARS,
              description="The CAM family's layer (default: the deepest spatial layer valid for the method). "
                          "Valid ones: GET /v1/models/{name}/layers."),
    ] = None,
    passes: Annotated[int | None, Query(ge=1, description=PASSES_DESCRIPTION)] = None,
    faithfulness: Annotated[
        bool, Query(description="Measure the map's deletion and insertion scores and a random map's (58 passes).")
    ] = True,
    seed: Annotated[
        int, Query(ge=0, le=MAX_SEED, description="Seeds RISE's masks, the random map and the ranking's ties.")
    ] = 0,
    colormap: Annotated[Colormap, Query(description="The overlay's colour map.")] = Colormap.INFERNO,
) -> ExplainQuery:
    request = ExplainRequest(method=method.value if method is not None else None, target=target, layer=layer,
                             passes=passes, faithfulness=faithfulness, seed=seed)
    return ExplainQuery(request, MapEncoding.PNG, colormap)


def explain_query(
    common: Annotated[ExplainQuery, Depends(common_query)],
    encoding: Annotated[
        MapEncoding,
        Query(description="json: nested lists; npy: base64 .npy (float32); png: base64 overlay on the input."),
    ] = MapEncoding.JSON,
) -> ExplainQuery:
    return ExplainQuery(common.request, encoding, common.colormap)


Explain = Annotated[ExplainQuery, Depends(explain_query)]
ExplainPng = Annotated[ExplainQuery, Depends(common_query)]


@dataclass(frozen=True)
class Explained:
    """One image explained by one model version."""

    result: ExplainResult
    model: str
    version: int
    spec: InputSpec  # the model's input recipe: the overlay undoes its normalisation


async def _explain(request: Request, plane: DataPlane, name: str | None, version: int | None,
                   query: ExplainQuery) -> Explained:
    note_model(request, name, version)
    images = await images_from_request(request, plane)
    if len(images) != 1:
        raise BadRequest(f"send exactly one image to explain, not {len(images)}")
    with plane.serving(name, version) as model:
        note_model(request, model.name, model.version)
        result = await unless_client_gone(request, plane.explain(model, images[0], query.request))
        return Explained(result, model.name, model.version, model.runtime.spec)


def _input_image(done: Explained) -> Any:
    spec = done.spec
    return enc.input_image(done.result.image, spec.mean, spec.std, spec.scale)


def _overlay(done: Explained, colormap: str) -> tuple[bytes, dict[str, Any]]:
    rgb, info = enc.saliency_overlay(_input_image(done), done.result.explanation.map, colormap)
    return enc.png_bytes(rgb), info


def _encode_map(done: Explained, query: ExplainQuery) -> dict[str, Any]:
    saliency = done.result.explanation.map
    if query.encoding is MapEncoding.PNG:
        return enc.encode_saliency(saliency, "png", _input_image(done), query.colormap.value)
    return enc.encode_saliency(saliency, query.encoding.value)


def faithfulness_body(scores: Faithfulness | None) -> dict[str, Any] | None:
    if scores is None:
        return None
    return {
        "deletion": scores.deletion,
        "insertion": scores.insertion,
        "random_deletion": scores.random_deletion,
        "beats_random": scores.beats_random,
        "note": scores.note,
        "steps": scores.steps,
        "baseline": "the training set's mean colour (0 after normalisation)",
        "deletion_curve": list(scores.deletion_curve),
        "insertion_curve": list(scores.insertion_curve),
        "random_deletion_curve": list(scores.random_deletion_curve),
    }


def explanation_body(done: Explained, encoded_map: dict[str, Any]) -> dict[str, Any]:
    explanation = done.result.explanation
    target = explanation.target
    return {
        "model": done.model,
        "version": done.version,
        "method": explanation.method.value,
        "layer": explanation.layer,
        "target": {"index": target.index, "label": target.label, "probability": target.probability},
        "forward_passes": explanation.forward_passes,
        "budget": explanation.budget,
        "map": encoded_map,
        "note": explanation.note,
        "faithfulness": faithfulness_body(explanation.faithfulness),
        "parameters": dict(explanation.parameters),
    }


def summary_header(done: Explained) -> str:
    """The answer without the map or curves, for the PNG route's X-Convscope-Explanation header."""
    body = explanation_body(done, {})
    del body["map"]
    scores = body["faithfulness"]
    if scores is not None:
        body["faithfulness"] = {k: v for k, v in scores.items() if not k.endswith("_curve")}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def _timings_ms(result: ExplainResult) -> dict[str, float]:
    return {**result.timings.as_ms(), "engine": round(result.engine_seconds * 1000.0, 3)}


async def _json(request: Request, plane: DataPlane, name: str | None, version: int | None,
                query: ExplainQuery) -> Response:
    done = await _explain(request, plane, name, version, query)
    timings = done.result.timings
    started = time.perf_counter()
    encoded = await plane.offload(_encode_map, done, query, size=done.result.explanation.map.size)
    timings.encode = time.perf_counter() - started
    body = explanation_body(done, encoded)
    body["timings_ms"] = _timings_ms(done.result)
    return JSONResponse(body, headers={"Server-Timing": server_timing(timings)})


async def _png(request: Request, plane: DataPlane, name: str | None, version: int | None,
               query: ExplainQuery) -> Response:
    done = await _explain(request, plane, name, version, query)
    timings = done.result.timings
    started = time.perf_counter()
    png, info = await plane.offload(_overlay, done, query.colormap.value, size=done.result.explanation.map.size)
    timings.encode = time.perf_counter() - started
    headers = {"X-Convscope-Explanation": summary_header(done),
               "X-Convscope-Overlay": json.dumps(info), "Server-Timing": server_timing(timings)}
    return Response(png, media_type="image/png", headers=headers)


EXPLAIN_DOC: dict[str, Any] = dict(response_model=schemas.ExplainResponse, responses=schemas.ERRORS,
                                   openapi_extra=ONE_IMAGE_BODY)
PNG_DOC: dict[str, Any] = dict(
    response_class=Response, openapi_extra=ONE_IMAGE_BODY,
    responses={200: {"content": {"image/png": {}},
                     "description": "The map as heat over the preprocessed input image. Header "
                                    "X-Convscope-Explanation: the JSON answer without the map and curves.",
                     "headers": {"X-Convscope-Explanation": {"schema": {"type": "string"}},
                                 "X-Convscope-Overlay": {"schema": {"type": "string"}}}},
               **schemas.ERRORS},
)


@router.post("/explain", summary="Explain a prediction of the default model", **EXPLAIN_DOC)
async def explain_default(request: Request, plane: Plane, query: Explain) -> Response:
    return await _json(request, plane, None, None, query)


@router.post("/explain.png", summary="Explain a prediction of the default model, as a PNG overlay", **PNG_DOC)
async def explain_default_png(request: Request, plane: Plane, query: ExplainPng) -> Response:
    return await _png(request, plane, None, None, query)


@router.post("/v1/models/{name}/explain", summary="Explain a prediction (newest version)", **EXPLAIN_DOC)
async def explain_newest(request: Request, plane: Plane, name: ModelName, query: Explain) -> Response:
    return await _json(request, plane, name, None, query)


@router.post("/v1/models/{name}/explain.png", summary="Explain a prediction as a PNG overlay (newest version)",
             **PNG_DOC)
async def explain_newest_png(request: Request, plane: Plane, name: ModelName, query: ExplainPng) -> Response:
    return await _png(request, plane, name, None, query)


@router.post("/v1/models/{name}/versions/{version}/explain", summary="Explain a prediction (one version)",
             **EXPLAIN_DOC)
async def explain_version(request: Request, plane: Plane, name: ModelName, version: Version,
                          query: Explain) -> Response:
    return await _json(request, plane, name, version, query)


@router.post("/v1/models/{name}/versions/{version}/explain.png",
             summary="Explain a prediction as a PNG overlay (one version)", **PNG_DOC)
async def explain_version_png(request: Request, plane: Plane, name: ModelName, version: Version,
                              query: ExplainPng) -> Response:
    return await _png(request, plane, name, version, query)


def document(schema: dict[str, Any], max_passes: int) -> None:
    """Write the server's own pass limit into the OpenAPI document (a setting, not a constant)."""
    for path in schema.get("paths", {}).values():
        operation = path.get("post", {})
        for parameter in operation.get("parameters", []):
            if parameter.get("name") == "passes" and parameter.get("in") == "query" \
                    and operation.get("tags") == ["explanations"]:
                _set_maximum(parameter["schema"], max_passes)


def _set_maximum(schema: dict[str, Any], maximum: int) -> None:
    """``passes`` is optional: its schema is anyOf [integer, null]; bound the integer."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            option["maximum"] = maximum

