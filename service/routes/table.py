"""Routes as a table: one function per operation, registered on the newest-version path and
on its ``/versions/{version}`` twin.

An operation is written once, taking ``version: int | None``. ``ModelRoutes.operation``
registers it twice: on ``{prefix}{path}`` without the version (None: the newest ready
one; ``alias_query`` adds the older ``?version=`` query as an alias there) and on
``{prefix}/versions/{version}{path}`` with the API's own version parameter, parsed by the
API's own rule. ``default`` registers an operation of the default model (no name either).
FastAPI reads each registration's parameters from its signature, so each gets one made
from the operation's own, with the version parameter as that path declares it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

Operation = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class VersionParameter:
    """How an API names a version in its paths: the parameter's type (with its OpenAPI
    documentation) and the rule that turns what was sent into a number."""

    annotation: Any
    parse: Callable[[Any], int | None] = lambda value: value


class ModelRoutes:
    """The operations on one API's models, each on both of its paths."""

    def __init__(self, router: APIRouter, prefix: str, version: VersionParameter,
                 alias: Any | None = None) -> None:
        self.router = router
        self.prefix = prefix  # e.g. "/v1/models/{name}"
        self.version = version
        self.alias = alias  # the ``?version=`` query parameter, where an operation keeps it

    def operation(self, method: str, path: str, *, summary: str, alias_query: bool = False,
                  **doc: Any) -> Callable[[Operation], Operation]:
        def register(operation: Operation) -> Operation:
            hints = typing.get_type_hints(operation, include_extras=True)
            alias = _Version(self.alias, None) if alias_query else None
            self._add(method, self.prefix + path, _bind(operation, hints, alias, lambda v: v),
                      f"{summary} (newest version)", doc)
            self._add(method, f"{self.prefix}/versions/{{version}}{path}",
                      _bind(operation, hints, _Version(self.version.annotation), self.version.parse),
                      f"{summary} (one version)", doc)
            return operation

        return register

    def default(self, method: str, path: str, *, summary: str, **doc: Any) -> Callable[[Operation], Operation]:
        """An operation of the default model: no name, no version in its path."""
        def register(operation: Operation) -> Operation:
            hints = typing.get_type_hints(operation, include_extras=True)
            self._add(method, path, _bind(operation, hints, None, lambda v: v, default_model=True), summary, doc)
            return operation

        return register

    def _add(self, method: str, path: str, endpoint: Operation, summary: str, doc: dict[str, Any]) -> None:
        self.router.add_api_route(path, endpoint, methods=[method], summary=summary, **doc)


@dataclass(frozen=True)
class _Version:
    """The version parameter as one registration declares it."""

    annotation: Any
    default: Any = inspect.Parameter.empty  # a path parameter is required; the query alias is not


def _bind(operation: Operation, hints: dict[str, Any], version: _Version | None,
          parse: Callable[[Any], int | None], *, default_model: bool = False) -> Operation:
    """``operation`` as one path's endpoint: the version parameter declared as that path has
    it (``None``: absent, the operation gets None), the name absent for the default model."""
    parameters = []
    for parameter in inspect.signature(operation).parameters.values():
        if parameter.name == "version":
            if version is not None:
                parameters.append(parameter.replace(annotation=version.annotation, default=version.default))
            continue
        if parameter.name == "name" and default_model:
            continue
        parameters.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)))
    parameters.sort(key=lambda p: p.default is not inspect.Parameter.empty)

    @functools.wraps(operation)
    async def endpoint(**values: Any) -> Response:
        values["version"] = parse(values["version"]) if "version" in values else None
        if default_model:
            values["name"] = None
        return await operation(**values)

    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Response)  # type: ignore[attr-defined]
    del endpoint.__wrapped__  # FastAPI must read the signature above, not the operation's
    return endpoint
