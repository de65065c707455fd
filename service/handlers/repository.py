"""The model repository as a whole: which versions exist and in which state, loading and
unloading on request (Triton's repository extension), whether the server can take traffic."""

from __future__ import annotations

from service.errors import ModelNotReady
from service.metrics import model_labels
from service.models.registry import IndexEntry, ModelRegistry, ModelState


class RepositoryHandler:
    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version on disk or loaded, by name then version."""
        entries = await self._registry.index()
        return [e for e in entries if not ready_only or e.state is ModelState.READY]

    async def load(self, name: str) -> None:
        await self._registry.load_model(name)

    async def unload(self, name: str) -> None:
        await self._registry.unload_model(name)

    def ready(self, name: str, version: int | None) -> ModelNotReady | None:
        """None when the version can serve; else the 503 that says why (an unknown model or
        version raises its 404)."""
        try:
            self._registry.resolve(name, version)
        except ModelNotReady as exc:
            return exc
        return None

    def readiness(self) -> tuple[bool, str]:
        """Whether any model serves, loading done; the reason when not."""
        return self._registry.readiness()

    def labels(self, name: str | None, version: int | None) -> tuple[str, str]:
        """A request's model and version as metric labels from a bounded set (only names the
        registry knows)."""
        return model_labels(self._registry.entries, name, version)
