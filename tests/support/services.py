"""The service's pieces put together for a test, as the app factory puts them together."""

from __future__ import annotations

from pathlib import Path

from service.metrics import Metrics
from service.models.loader import Loader
from service.models.registry import ModelRegistry
from service.options import ServiceOptions
from service.settings import Settings


def options_for(root: Path, **settings: object) -> ServiceOptions:
    return ServiceOptions.from_settings(Settings(model_repository=root, **settings))  # type: ignore[arg-type]


def registry_for(root: Path, **settings: object) -> ModelRegistry:
    """A registry over ``root`` with the options these settings make (nothing loaded yet)."""
    options = options_for(root, **settings)
    metrics = Metrics()
    loader = Loader(options.runtime, options.batching, options.explanations, metrics,
                    reducing_gap=options.preparation.reducing_gap)
    return ModelRegistry(options.repository, loader, metrics)
