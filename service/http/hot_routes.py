"""Requests to a path FastAPI has already routed to a planned route go straight to its plan.

Routing costs: on FastAPI 0.163 an included route is found through a tree of included
routers and per-request route contexts, then Starlette's exception middleware, FastAPI's
exit-stack middleware and ``request_response`` wrap the handler. In a thread-CPU profile of
the digits model at 16 clients, everything between the exception middleware and the route's
plan (service/routes/direct.py) was ~20% of the event loop's work per prediction, more than
decoding the image; the loop is what bounds a small model's images/s (issue 23).

What goes straight: a request whose method and path FastAPI routed before to a
``DirectRoute`` that followed its plan (the route's handler records it here, with the route
and path parameters it matched), while the app has no ``dependency_overrides``. Routing
depends on nothing else (no host or header routes here), so the same method and path reach
the same route with the same parameters. The plan runs the route's dependencies (drain,
API key) and endpoint as it would under FastAPI; a parameter that does not validate (the
plan runs nothing then) or a path not seen yet takes the full way, as does every other
request. Exceptions go to the app's own handlers, as Starlette's exception middleware would
send them; anything without one propagates to the server-error middleware, as before.
The middlewares outside this one (in-flight count, request metrics) see every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

# Distinct (method, path) pairs kept: a bounded table, whatever paths clients send (a path
# is only kept once a route has answered it, so every entry names a model that served).
MAX_PATHS = 1024


class Plan(Protocol):
    async def run(self, request: Request) -> Response | None: ...


@dataclass(frozen=True)
class Known:
    """A path a planned route answered: the route's plan and what routing put in the scope."""

    plan: Plan
    route: Any
    endpoint: Any
    path_params: dict[str, Any]


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class KnownPaths:
    """(method, root path, path) -> the planned route FastAPI found for it."""

    def __init__(self, capacity: int = MAX_PATHS) -> None:
        self.capacity = capacity
        self._known: dict[tuple[str, str, str], Known] = {}

    @staticmethod
    def key(scope: Scope) -> tuple[str, str, str]:
        return scope["method"], scope.get("root_path", ""), scope["path"]

    def remember(self, scope: Scope, plan: Plan) -> None:
        key = self.key(scope)
        if key in self._known or len(self._known) >= self.capacity:
            return
        self._known[key] = Known(plan, scope.get("route"), scope.get("endpoint"), dict(scope.get("path_params", {})))

    def get(self, scope: Scope) -> Known | None:
        return self._known.get(self.key(scope))

    def __len__(self) -> int:
        return len(self._known)


class HotRoutes:
    """ASGI middleware: a known path's request to its plan, every other one to ``app``."""

    def __init__(self, app: ASGIApp, known: KnownPaths, application: Any) -> None:
        self.app = app
        self.known = known
        # The FastAPI app: its exception handlers (read per error, as registered), its router
        # and its dependency_overrides (tests replace dependencies there).
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        known = self.known.get(scope) if scope["type"] == "http" else None
        if known is None or getattr(self.application, "dependency_overrides", None):
            await self.app(scope, receive, send)
            return
        scope["route"], scope["endpoint"] = known.route, known.endpoint
        scope["path_params"] = dict(known.path_params)
        scope.setdefault("router", self.application.router)
        request = Request(scope, receive, send)
        try:
            response = await known.plan.run(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        if response is None:  # a parameter did not validate: FastAPI's own answer (422)
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        """The app's handler for the exception's class or its nearest base, as Starlette's
        exception middleware finds it (``Exception`` itself is the server-error middleware's)."""
        handlers: dict[Any, ExceptionHandler] = self.application.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = handlers.get(cls)
            if handler is not None:
                return handler
        return None
