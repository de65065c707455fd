"""Liveness, readiness, Prometheus metrics and the explorer page."""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from service.http import auth
from service.http.drain import readiness
from service.http.responses import FastJSONResponse as JSONResponse
from service.metrics import CONTENT_TYPE, Metrics
from service.routes.deps import HandlersDep

router = APIRouter(tags=["system"])

READY_RESPONSES: dict[int | str, dict[str, object]] = {
    503: {"description": "Not ready: models still loading, none ready, or the server draining before it exits."},
}
METRICS_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {"description": "Prometheus text exposition format.",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}


@router.get("/", response_class=HTMLResponse, dependencies=[auth.PUBLIC],
            summary="The explorer: predictions, feature maps and filters in a browser")
async def explorer() -> HTMLResponse:
    return HTMLResponse(files("service").joinpath("static/explorer.html").read_text(encoding="utf-8"))


class _Static(StaticFiles):
    """The explorer's modules and styles: revalidated on every load (an ETag makes that a
    304), so a page never runs an older script than the server it talks to. Modules go out as
    text/javascript whatever the host's MIME table says: a browser runs
    ``<script type="module">`` only with a JavaScript type."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.setdefault("Cache-Control", "no-cache")
        if path.endswith(".mjs") and response.status_code == 200:
            response.headers["Content-Type"] = "text/javascript; charset=utf-8"
        return response


def mount_explorer(app: FastAPI) -> None:
    """Serve the explorer's own files under /explorer (public, like the page: no model data)."""
    with as_file(files("service") / "static") as path:
        app.mount("/explorer", _Static(directory=Path(path)), name="explorer")


@router.get("/healthz", dependencies=[auth.PROBE], summary="Alive: the process answers")
async def healthz() -> Response:
    return JSONResponse({"status": "alive"})


@router.get("/readyz", dependencies=[auth.PROBE], responses=READY_RESPONSES,
            summary="Ready: model loading has finished, at least one model serves, and no drain has begun")
async def readyz(request: Request, handlers: HandlersDep) -> Response:
    ready, detail = readiness(request, handlers.repository)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "detail": detail, "models": handlers.introspection.models()},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", dependencies=[auth.METRICS], response_class=Response, responses=METRICS_RESPONSE,
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)
