"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from service.api.common import Plane
from service.api.responses import FastJSONResponse as JSONResponse
from service.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["system"])


@router.get("/", response_class=HTMLResponse, summary="The explorer: predictions, feature maps and filters in a browser")
async def explorer() -> HTMLResponse:
    return HTMLResponse(files("service").joinpath("static/explorer.html").read_text(encoding="utf-8"))


@router.get("/healthz", summary="Alive: the process answers")
async def healthz() -> Response:
    return JSONResponse({"status": "alive"})


@router.get("/readyz", summary="Ready: model loading has finished and at least one model serves")
async def readyz(plane: Plane) -> Response:
    ready, detail = plane.registry.readiness()
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "detail": detail, "models": plane.registry.status()},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)
