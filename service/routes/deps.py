"""What the routes get from the app: the handlers and the worker threads that render
answers, and the note to the request metrics of which model a request was for.

Dependencies are ``async def`` even when they only read an attribute: FastAPI runs a plain
``def`` one on a worker thread, two thread hand-offs per request (~1 ms of CPU per image
under load, benchmarks/profile_load.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from service.handlers import Handlers
from service.handlers.results import ModelRef
from service.inference.dataplane import Timings
from service.inference.workers import Workers


async def get_handlers(request: Request) -> Handlers:
    handlers: Handlers = request.app.state.handlers
    return handlers


async def get_workers(request: Request) -> Workers:
    workers: Workers = request.app.state.workers
    return workers


HandlersDep = Annotated[Handlers, Depends(get_handlers)]
WorkersDep = Annotated[Workers, Depends(get_workers)]


def note_model(request: Request, name: str | None, version: int | None) -> None:
    """Tell the metrics middleware which model this request was for (as asked; a result's
    ModelRef says which version answered)."""
    request.state.model = name
    request.state.version = version


def answered_by(request: Request, model: ModelRef) -> None:
    note_model(request, model.name, model.version)


def server_timing(timings: Timings | Mapping[str, float]) -> str:
    """The Server-Timing header: of ``timings``, or of ``Timings.as_ms()`` already made
    for the answer's body (made once per request, the same figures in both)."""
    ms = timings.as_ms() if isinstance(timings, Timings) else timings
    return ", ".join(f"{k};dur={v}" for k, v in ms.items())
