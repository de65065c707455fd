"""Explanations over HTTP: which part of an image made the model decide, and how far to
trust the map.

``POST /explain`` (default model), ``/v1/models/{name}/explain`` and
``/v1/models/{name}/versions/{version}/explain`` answer JSON; the ``.png`` variants answer
the heat-map overlay itself. The body is one image in any form ``/predict`` accepts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from service.codecs import v1
from service.codecs.arrays import MapEncoding
from service.codecs.colormaps import SaliencyColormap
from service.explain import ExplainRequest, Method
from service.handlers.results import Explained
from service.http import auth
from service.http.requests import unless_client_gone
from service.http.responses import FastJSONResponse as JSONResponse
from service.routes import schemas
from service.routes.deps import HandlersDep, WorkersDep, answered_by, note_model, server_timing
from service.routes.params import ModelName, Version
from service.routes.table import ModelRoutes, VersionParameter
from service.routes.v1 import ONE_IMAGE_BODY, Reader

router = APIRouter(tags=["explanations"], dependencies=[auth.INFER])
models = ModelRoutes(router, "/v1/models/{name}", VersionParameter(Version))

MAX_SEED = 2**32 - 1
MAX_TARGET_CHARS = 256


@dataclass(frozen=True)
class ExplainQuery:
    request: ExplainRequest
    encoding: MapEncoding
    colormap: SaliencyColormap


PASSES_DESCRIPTION = (
    "Upper bound on forward passes, all included (the image, the method's, faithfulness's 58). Left out: the "
    "method's default cost. Bounded by the server's CONVSCOPE_MAX_EXPLAIN_PASSES (over it: 422 naming the "
    "limit); below the method's least (occlusion 2 x 2 windows, RISE 16 masks, score-cam 1 channel, plus "
    "1 + 58): 422 naming the least."
)


async def common_query(
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
    colormap: Annotated[SaliencyColormap, Query(description="The overlay's colour map.")] = (
        SaliencyColormap.INFERNO),
) -> ExplainQuery:
    request = ExplainRequest(method=method.value if method is not None else None, target=target, layer=layer,
                             passes=passes, faithfulness=faithfulness, seed=seed)
    return ExplainQuery(request, MapEncoding.PNG, colormap)


async def explain_query(
    common: Annotated[ExplainQuery, Depends(common_query)],
    encoding: Annotated[
        MapEncoding,
        Query(description="json: nested lists; npy: base64 .npy (float32); png: base64 overlay on the input."),
    ] = MapEncoding.JSON,
) -> ExplainQuery:
    return ExplainQuery(common.request, encoding, common.colormap)


Explain = Annotated[ExplainQuery, Depends(explain_query)]
ExplainPng = Annotated[ExplainQuery, Depends(common_query)]


async def _explain(request: Request, handlers: HandlersDep, reader: Reader, name: str | None,
                   version: int | None, query: ExplainQuery) -> Explained:
    note_model(request, name, version)
    image = await reader.one_image(request, "to explain")
    done = await unless_client_gone(request, handlers.explanation.explain(name, version, image, query.request))
    answered_by(request, done.model)
    return done


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


async def explain(request: Request, handlers: HandlersDep, workers: WorkersDep, reader: Reader,
                  name: ModelName, version: int | None, query: Explain) -> Response:
    done = await _explain(request, handlers, reader, name, version, query)
    timings = done.result.timings
    started = time.perf_counter()
    encoded = await workers.offload(v1.explanation_map, done, query.encoding, query.colormap.value,
                                    size=done.result.explanation.map.size)
    timings.encode = time.perf_counter() - started
    body = v1.explanation(done, encoded)
    body["timings_ms"] = v1.explanation_timings(done)
    return JSONResponse(body, headers={"Server-Timing": server_timing(timings)})


async def explain_png(request: Request, handlers: HandlersDep, workers: WorkersDep, reader: Reader,
                      name: ModelName, version: int | None, query: ExplainPng) -> Response:
    done = await _explain(request, handlers, reader, name, version, query)
    timings = done.result.timings
    started = time.perf_counter()
    png, info = await workers.offload(v1.overlay_png, done, query.colormap.value,
                                      size=done.result.explanation.map.size)
    timings.encode = time.perf_counter() - started
    headers = {"X-Convscope-Explanation": v1.explanation_summary(done),
               "X-Convscope-Overlay": json.dumps(info), "Server-Timing": server_timing(timings)}
    return Response(png, media_type="image/png", headers=headers)


models.default("POST", "/explain", summary="Explain a prediction of the default model", **EXPLAIN_DOC)(explain)
models.default("POST", "/explain.png", summary="Explain a prediction of the default model, as a PNG overlay",
               **PNG_DOC)(explain_png)
models.operation("POST", "/explain", summary="Explain a prediction", **EXPLAIN_DOC)(explain)
models.operation("POST", "/explain.png", summary="Explain a prediction as a PNG overlay", **PNG_DOC)(explain_png)


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

