"""Routes whose parameters and dependencies are resolved by a plan made once, at start-up.

FastAPI resolves an endpoint's arguments per request with ``solve_dependencies``, which is
generic: it walks the dependency tree, builds a cache key per dependency, checks security
scopes, looks each parameter up through its aliases. On the 2-core benchmark machine that
cost 0.19 ms of the event loop per digits prediction and 0.35 ms per AlexNet one (issue 23,
benchmarks/peers/FINDINGS.md), more than the route's own work.

The hot routes have a simple shape: their dependencies are ``async`` callables of the
request alone (the app's drain check, the router's access gate, the handlers) or of query
parameters alone (``predict_query``), and their own parameters are the request, path and
query parameters. For a route of that shape ``DirectRoute`` makes a ``Plan`` when FastAPI
builds its handler: which callable fills which argument, and each parameter's FastAPI field.
Per request the plan reads each parameter where FastAPI would and validates it with that
same field (so every value is the one FastAPI would pass), awaits the dependencies in
FastAPI's order and calls the endpoint. A request with a parameter that does not validate
goes to FastAPI's own handler, which answers the same 422 it always does; so does every
request while the app has ``dependency_overrides`` (tests replace dependencies that way).
A route of any other shape keeps FastAPI's handler. The OpenAPI document is made from the
route as declared, so it does not change.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from copy import deepcopy
from dataclasses import dataclass
from enum import Enum
from typing import Any

import fastapi.routing
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# Defaults that a request may share with the next (an Enum member is a singleton).
_IMMUTABLE = (type(None), bool, int, float, str, bytes, Enum)


@dataclass(frozen=True)
class Parameter:
    """A path or query parameter: where it is read, and FastAPI's field that validates it."""

    field: ModelField
    location: str  # "path" or "query"
    sequence: bool  # a query parameter that may repeat (list[str])
    required: bool
    default: Any  # read from the field once: pydantic's get_default costs ~1 us a call
    fresh_default: bool  # a mutable default, copied for each request as FastAPI does

    @classmethod
    def of(cls, field: ModelField, location: str) -> Parameter | None:
        info = field.field_info
        annotation = info.annotation
        if (info.validation_alias is not None or info.validate_default or info.default_factory is not None
                or (isinstance(annotation, type) and issubclass(annotation, BaseModel))
                or any(type(item).__name__ == "Json" for item in info.metadata)):
            return None  # FastAPI reads these in ways the plan does not repeat
        required = info.is_required()
        default = None if required else field.default
        return cls(field, location, location == "query" and field_annotation_is_sequence(annotation), required,
                   default, not isinstance(default, _IMMUTABLE))

    def read(self, path: dict[str, Any], query: QueryParams | None) -> tuple[bool, Any]:
        """(valid, value), as FastAPI's request_params_to_args reads and validates it."""
        alias = self.field.alias
        if self.location == "path":
            value = path.get(alias)
        elif query is None:
            value = None
        else:
            value = query.getlist(alias) if self.sequence else query.get(alias)
        if value is None or (self.sequence and len(value) == 0):
            if self.required:
                return False, None
            return True, deepcopy(self.default) if self.fresh_default else self.default
        checked, errors = self.field.validate(value, {}, loc=(self.location, alias))
        return not errors, checked


@dataclass(frozen=True)
class Dependency:
    """An ``async`` dependency of the request alone or of query parameters alone."""

    name: str | None  # the endpoint's argument it fills (None: declared for its effect)
    call: Callable[..., Awaitable[Any]]
    request_name: str | None
    query: tuple[Parameter, ...]

    @classmethod
    def of(cls, dependant: Dependant) -> Dependency | None:
        call = dependant.call
        if (call is None or dependant.dependencies or dependant.path_params or dependant.header_params
                or dependant.cookie_params or dependant.body_params or _special_parameters(dependant)
                or dependant.own_oauth_scopes or not _is_async(call)
                or (dependant.request_param_name is not None and dependant.query_params)):
            return None
        query = tuple(Parameter.of(field, "query") for field in dependant.query_params)
        if any(p is None for p in query):
            return None
        return cls(dependant.name, call, dependant.request_param_name, query)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    """How one route's endpoint gets its arguments, made from its FastAPI ``Dependant``."""

    dependencies: tuple[Dependency, ...]
    parameters: tuple[Parameter, ...]
    request_name: str | None
    endpoint: Callable[..., Awaitable[Response]]

    @classmethod
    def of(cls, dependant: Dependant) -> Plan | None:
        """The plan, or None when the route has anything it does not handle."""
        call = dependant.call
        if (call is None or not inspect.iscoroutinefunction(call) or dependant.header_params
                or dependant.cookie_params or dependant.body_params or _special_parameters(dependant)):
            return None
        dependencies = tuple(Dependency.of(d) for d in dependant.dependencies)
        calls = [d.call for d in dependencies if d is not None]
        if any(d is None for d in dependencies) or len(set(map(id, calls))) != len(calls):
            return None  # a shape not handled, or one callable twice (FastAPI would call it once)
        parameters = tuple([*(Parameter.of(f, "path") for f in dependant.path_params),
                            *(Parameter.of(f, "query") for f in dependant.query_params)])
        if any(p is None for p in parameters):
            return None
        return cls(dependencies, parameters, dependant.request_param_name, call)  # type: ignore[arg-type]

    async def run(self, request: Request) -> Response | None:
        """The endpoint's answer; None, having run nothing, when a parameter does not
        validate (FastAPI's own handler then answers)."""
        path = request.path_params
        query = request.query_params if request.scope.get("query_string") else None
        own = _read(self.parameters, path, query)
        if own is None:
            return None
        given: list[dict[str, Any]] = []
        for dependency in self.dependencies:
            arguments = _read(dependency.query, path, query)
            if arguments is None:
                return None
            given.append(arguments)
        values: dict[str, Any] = {}
        for dependency, arguments in zip(self.dependencies, given):
            if dependency.request_name is not None:
                arguments[dependency.request_name] = request
            result = await dependency.call(**arguments)
            if dependency.name is not None:
                values[dependency.name] = result
        values.update(own)
        if self.request_name is not None:
            values[self.request_name] = request
        response = await self.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.endpoint.__name__} must return a Response to be a DirectRoute")
        return response


def _read(parameters: tuple[Parameter, ...], path: dict[str, Any],
          query: QueryParams | None) -> dict[str, Any] | None:
    """Each parameter's value by its name; None when one does not validate."""
    values: dict[str, Any] = {}
    for parameter in parameters:
        valid, value = parameter.read(path, query)
        if not valid:
            return None
        values[parameter.field.name] = value
    return values


class DirectRoute(APIRoute):
    """An APIRoute whose handler follows a ``Plan`` when the route has a plan's shape."""

    def get_route_handler(self) -> Handler:
        fastapis = super().get_route_handler()
        # An included route is built per inclusion, from the route as included (with the
        # app's and the router's dependencies): FastAPI names it in this context variable.
        context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = context_var.get() if context_var is not None else None
        route = context if context is not None and getattr(context, "original_route", None) is self else self
        plan = Plan.of(route.dependant) if route.dependant is not None else None
        if plan is None:
            return fastapis
        overrides = route.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if overrides is None or not getattr(overrides, "dependency_overrides", None):
                response = await plan.run(request)
                if response is not None:
                    # The next request to this method and path can skip the routing
                    # (service/http/hot_routes.py), where the app has that middleware.
                    known = getattr(request.app.state, "known_paths", None)
                    if known is not None:
                        known.remember(request.scope, plan)
                    return response
            return await fastapis(request)

        handler.plan = plan  # type: ignore[attr-defined]  # for tests: the route follows one
        return handler


def _special_parameters(dependant: Dependant) -> bool:
    return any(name is not None for name in (
        dependant.websocket_param_name, dependant.http_connection_param_name, dependant.response_param_name,
        dependant.background_tasks_param_name, dependant.security_scopes_param_name))


def _is_async(call: Callable[..., Any]) -> bool:
    if inspect.isgeneratorfunction(call) or inspect.isasyncgenfunction(call):
        return False
    if inspect.iscoroutinefunction(call):
        return True
    dunder = getattr(call, "__call__", None)  # noqa: B004  (an instance with an async __call__)
    return not inspect.isclass(call) and dunder is not None and inspect.iscoroutinefunction(dunder)
