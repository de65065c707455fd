"""Handlers: one per family of operations, between the routes and the core.

Each operation takes ``(name, version | None)``, holds that version for the call (so it is
never unloaded under the request) and returns a typed result (``results.py``) for a codec
to render. Routes reach models only through these; nothing above a handler touches the
registry, a runtime or the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.handlers.explanation import ExplanationHandler
from service.handlers.inference import InferenceHandler
from service.handlers.introspection import IntrospectionHandler
from service.handlers.repository import RepositoryHandler


@dataclass(frozen=True)
class Handlers:
    inference: InferenceHandler
    explanation: ExplanationHandler
    introspection: IntrospectionHandler
    repository: RepositoryHandler
