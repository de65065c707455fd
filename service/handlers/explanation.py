"""Explaining a prediction: which part of one image made the version decide, and how far
to trust the map (service/explain does the work; the data plane runs its passes)."""

from __future__ import annotations

from service.explain import ExplainRequest
from service.handlers.base import Handler, ref
from service.handlers.results import Explained
from service.inference.dataplane import DataPlane
from service.models.registry import ModelRegistry


class ExplanationHandler(Handler):
    def __init__(self, registry: ModelRegistry, plane: DataPlane) -> None:
        super().__init__(registry)
        self._plane = plane

    async def explain(self, name: str | None, version: int | None, image: bytes,
                      request: ExplainRequest) -> Explained:
        with self.holding(name, version) as model:
            result = await self._plane.explain(model, image, request)
            return Explained(ref(model), result, model.spec)
