"""The service's pieces put together for a test, as the app factory puts them together."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.testclient import TestClient

from service.app import create_app
from service.handlers.explanation import ExplanationHandler
from service.handlers.inference import InferenceHandler
from service.handlers.introspection import IntrospectionHandler
from service.handlers.repository import RepositoryHandler
from service.inference.dataplane import DataPlane
from service.inference.workers import Workers
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


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200 or response.json()["detail"] != "loading models":
            return
        time.sleep(0.02)
    raise TimeoutError("the app did not finish loading its models")


@contextmanager
def serving(**overrides: object) -> Iterator[TestClient]:
    """A TestClient over ``create_app(Settings(**overrides))`` whose models have loaded."""
    app = create_app(Settings(**overrides))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@dataclass
class HandlerSet:
    """The four handlers over one registry, as the app wires them."""

    registry: ModelRegistry
    inference: InferenceHandler
    explanation: ExplanationHandler
    introspection: IntrospectionHandler
    repository: RepositoryHandler


@asynccontextmanager
async def handlers_for(root: Path, **settings: object) -> AsyncIterator[HandlerSet]:
    """The handlers over ``root``, every version loaded; closed afterwards."""
    options = options_for(root, **settings)
    registry = registry_for(root, **settings)
    workers = Workers(2)
    plane = DataPlane(options.preparation, workers, Metrics())
    await registry.load_all()
    try:
        yield HandlerSet(registry, InferenceHandler(registry, plane, workers, options.limits),
                         ExplanationHandler(registry, plane), IntrospectionHandler(registry),
                         RepositoryHandler(registry))
    finally:
        await registry.close()
        workers.close()
