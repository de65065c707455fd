"""The application factory: settings in, a FastAPI app out. Nothing heavy happens at import;
models load in the lifespan, in the background, while /healthz already answers and
/readyz says 503 until they are in."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import onnxruntime as ort
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.errors import ServiceError
from service.handlers import Handlers
from service.handlers.explanation import ExplanationHandler
from service.handlers.inference import InferenceHandler
from service.handlers.introspection import IntrospectionHandler
from service.handlers.repository import RepositoryHandler
from service.http import auth
from service.http.drain import Drain, InFlight, refuse_while_draining
from service.http.hot_routes import HotRoutes, KnownPaths
from service.http.limits import CONNECTIONS, PROTOCOL_STATUS, REFUSALS
from service.http.requests import ClientGone, RequestReader
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.dataplane import DataPlane
from service.inference.workers import Workers
from service.metrics import Metrics
from service.models.loader import Loader
from service.models.registry import ModelRegistry
from service.models.watch import watch
from service.options import ServiceOptions
from service.routes import channels, docs, explanations, repository, system, v1, v2
from service.settings import Settings

log = logging.getLogger("convscope")

DESCRIPTION = """
Serve a convolutional neural network and look inside it while it serves.

* **v1** (`/predict`, `/v1/models/...`): class predictions for uploaded images and, on request,
  the feature maps of any layer (`layers=`), as PNG grids, `.npy` arrays, nested lists or
  per-channel statistics; each conv layer's filters as a picture.
* **channels** (`/v1/models/{name}/layers/{layer}/channels/{c}`, `/v1/models/{name}/samples`):
  what each channel detects, as the held-out images that excite it most (computed at
  export), the filter that made it, and sample images to start from.
* **v2**: the Open Inference Protocol (KServe v2 / Triton) REST API, with the binary tensor
  data and classification extensions. Feature maps are extra outputs, returned only when
  asked for in `outputs`.
* **explanations** (`/explain`, `/v1/models/{name}/explain`, `.../explain.png`): which part of
  an image made the model decide (occlusion, RISE, Score-CAM, Grad-CAM, HiResCAM, Eigen-CAM),
  as a map at the input's resolution, with deletion/insertion scores against a random map
  that say whether to trust it.
* **repository** (`/v2/repository/...`): Triton's model repository extension: the index,
  load and unload (a key of scope `admin`; disabled when no key is configured).
* `/metrics` (Prometheus), `/healthz`, `/readyz`.

With API keys configured (`CONVSCOPE_API_KEYS_FILE`), send `Authorization: Bearer <key>`.

Every error answers `{"error": "..."}`.
"""


def create_app(settings: Settings | None = None, *, load_before_serving: bool = False) -> FastAPI:
    """The app, from the settings (read here, once, into ServiceOptions)."""
    return build_app(ServiceOptions.from_settings(settings or Settings()), load_before_serving=load_before_serving)


def build_app(options: ServiceOptions, *, load_before_serving: bool = False) -> FastAPI:
    """The app. Models load in the background while /healthz answers and /readyz says 503;
    with ``load_before_serving`` (each of several workers sharing a port) the startup waits
    for them instead, so uvicorn listens, and the kernel hands this worker connections, only
    once it can answer them."""
    logging.basicConfig(level=options.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()
    workers = Workers(options.preparation.threads)
    loader = Loader(options.runtime, options.batching, options.explanations, metrics,
                    reducing_gap=options.preparation.reducing_gap)
    registry = ModelRegistry(options.repository, loader, metrics)
    plane = DataPlane(options.preparation, workers, metrics)
    handlers = Handlers(
        inference=InferenceHandler(registry, plane, workers, options.limits),
        explanation=ExplanationHandler(registry, plane),
        introspection=IntrospectionHandler(registry),
        repository=RepositoryHandler(registry),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        log.info("onnxruntime %s, providers available: %s; using %s", ort.__version__,
                 ", ".join(ort.get_available_providers()), ", ".join(options.runtime.providers))
        log.info("%s", _access_summary(options.access))
        if load_before_serving:
            await _load(registry)
        loading = asyncio.create_task(_load_and_watch(registry, options.repository.poll_seconds,
                                                      loaded=load_before_serving), name="load-models")
        try:
            # The lifespan state reaches the HTTP protocol (service/http/limits.py): it counts
            # its open connections and those it refuses before any request gets here.
            yield {REFUSALS: metrics.count_refusal, CONNECTIONS: metrics.open_connections}
        finally:
            loading.cancel()
            try:
                await loading
            except asyncio.CancelledError:
                pass
            await registry.close()
            workers.close()

    # FastAPI's own docs pages load their assets from a CDN: service.routes.docs serves them.
    app = FastAPI(title="convscope", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, dependencies=[Depends(refuse_while_draining)])
    app.state.metrics = metrics
    app.state.registry = registry  # for tests and embedders; the routes go through the handlers
    app.state.handlers = handlers
    app.state.workers = workers
    app.state.reader = RequestReader(options.limits, workers)
    app.state.drain = Drain(options.server.drain_seconds)
    _install_error_handlers(app)
    app.include_router(v1.router)
    app.include_router(channels.router)
    app.include_router(explanations.router)
    app.include_router(v2.router)
    app.include_router(v2.health)
    app.include_router(repository.router)
    app.include_router(system.router)
    system.mount_explorer(app)
    docs.install(app)
    auth.install(app, options.access)
    _document(app, options.access, options.explanations.max_passes)
    app.state.known_paths = KnownPaths()
    app.add_middleware(HotRoutes, known=app.state.known_paths, application=app)  # innermost: inside the metrics
    app.add_middleware(RequestMetrics, metrics=metrics, models=handlers.repository)
    app.add_middleware(InFlight, drain=app.state.drain)  # outermost: counts every request
    return app


def _document(app: FastAPI, policy: auth.AccessPolicy, max_passes: int) -> None:
    """The OpenAPI document also says which calls need a key (service.http.auth.document),
    holds the v2 request schema the infer routes refer to, and this server's explanation
    pass limit."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {}).setdefault("schemas", {})["InferenceRequest"] = v2.INFERENCE_REQUEST
            auth.document(schema, app, policy)
            explanations.document(schema, max_passes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _access_summary(policy: auth.AccessPolicy) -> str:
    if not policy.keys:
        return ("no API key configured: inference is open and repository control is disabled "
                "(CONVSCOPE_API_KEYS_FILE enables keys)")
    return (f"{len(policy.keys)} API key(s) configured: inference and repository control need one; "
            f"/metrics {'needs one' if policy.metrics_require_key else 'is open'}")


def check_startup(settings: Settings) -> ServiceOptions:
    """What can be known wrong before serving, as a ValueError that says so: an execution
    provider this onnxruntime lacks, API keys that cannot be used, a default model the
    repository does not hold. The options, when all is well."""
    options = ServiceOptions.from_settings(settings)
    repository = options.repository
    if repository.default_model is not None:
        names = sorted({ref.name for ref in repository.scan()})
        if repository.default_model not in names:
            raise ValueError(
                f"CONVSCOPE_DEFAULT_MODEL={repository.default_model!r} is not in the model repository "
                f"{repository.root}; models there: {', '.join(names) or '(none)'}"
            )
    return options


def create_app_from_env() -> FastAPI:
    """For uvicorn's ``--factory`` with several workers: each worker reads the environment."""
    return create_app(Settings())


async def _load(registry: ModelRegistry) -> None:
    try:
        await registry.load_all()
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug in loading must not leave /readyz loading forever
        log.exception("model loading failed")


async def _load_and_watch(registry: ModelRegistry, poll_seconds: float, *, loaded: bool) -> None:
    """Load the repository (unless done), then, when the poll is on, keep the registry in
    step with it."""
    if not loaded:
        await _load(registry)
    if poll_seconds > 0:
        await watch(registry, poll_seconds)


def _release_frames(exc: BaseException) -> None:
    """Drop what the finished frames of a handled error's traceback hold. An error answered
    here leaves a reference cycle (the exception, its traceback, the frames, their closures)
    that only the garbage collector frees, with the request and its body in those frames: a
    client sending 1 MB bodies that fail left 1 MB per request for the collector (1.6 GB in
    cycles over 1600 such requests with the collector off), where every answered request
    leaves nothing. Not for unexpected errors: the server logs their traceback after this
    handler."""
    traceback.clear_frames(exc.__traceback__)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        _release_frames(exc)
        return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client hung up (during its upload, or while its answer was being made): its
        # outcome, not a fault. Nobody reads the 499; the metrics count it.
        log.debug("client gone: %s %s", request.method, request.url.path)
        _release_frames(exc)
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
            problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        _release_frames(exc)
        return JSONResponse({"error": "invalid request: " + "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; the API is listed at /docs"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs"
        _release_frames(exc)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it whole, tell the client little.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


class RequestMetrics:
    """Counts every request by model, version, route and status, times it, and names the
    replica that answered (so a load balancer's spread can be seen from outside).

    Pure ASGI rather than BaseHTTPMiddleware: it must not wrap ``receive``, which the
    routes read to notice a client that has gone away.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, models: RepositoryHandler) -> None:
        self.app = app
        self.metrics = metrics
        self.models = models
        self.replica = socket.gethostname().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-convscope-replica", self.replica)]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # Every label from a bounded set: the route's template, a status, and the model
            # and version only as the registry knows them (note_model), never the URL's words.
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            if endpoint not in ("/metrics", "/healthz", "/readyz"):
                status = scope.get(PROTOCOL_STATUS, status)  # the server cut the request short
                state = scope.get("state", {})
                model, version = self.models.labels(state.get("model"), state.get("version"))
                self.metrics.requests.labels(model, version, endpoint, str(status)).inc()
                self.metrics.request_latency.labels(model, endpoint).observe(time.perf_counter() - started)
