"""What every handler does first: resolve ``(name, version)`` and hold that version for the
whole call, so it is never unloaded under the request (a newer one may become the default
meanwhile; this call finishes on the one it started on)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from service.handlers.results import ModelRef
from service.models.loader import LoadedVersion
from service.models.registry import ModelRegistry


class Handler:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    @contextmanager
    def holding(self, name: str | None, version: int | None) -> Iterator[LoadedVersion]:
        """The version a call means (its model's newest ready one unless named), leased
        until the block ends; 404/503 naming the valid ones when there is none."""
        with self._registry.lease(name, version) as model:
            yield model


def ref(model: LoadedVersion) -> ModelRef:
    return ModelRef(model.name, model.version, model.digest)
