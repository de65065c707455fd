"""The model registry: every version in the repository, its state, and the one place that
turns ``(name, version)`` into a model that can serve.

A version is *loading*, *ready*, *failed* (with its reason) or *unloading*. Requests hold a
lease on the served model they resolved (``ModelRegistry.lease``), taken in the same step
as the resolution so nothing can unload the model in between; unloading a version waits
for its leases to end before it stops the batcher and drops the sessions. That is what lets
versions come and go (reload, unload) while requests are in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from service.batching import DynamicBatcher
from service.errors import BadRequest, ModelNotReady, NotFound, UnknownModel, UnknownVersion
from service.metrics import Metrics
from service.repository import ArtifactError, ArtifactRef, load_artifact, scan
from service.runtime import ModelRuntime, RuntimeOptions, load_model
from service.settings import Settings
from service.signature import ModelSignature

log = logging.getLogger("convscope.registry")


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


@dataclass(eq=False)
class ServedModel:
    """A loaded version: its sessions and its batcher, and how many requests hold it."""

    runtime: ModelRuntime
    batcher: DynamicBatcher
    leases: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> int:
        return self.runtime.version

    @property
    def signature(self) -> ModelSignature:
        return self.runtime.signature

    def acquire(self) -> None:
        self.leases += 1
        self._released.clear()

    def release(self) -> None:
        self.leases -= 1
        if self.leases == 0:
            self._released.set()

    async def stop(self) -> None:
        """Wait for every request holding this model, then stop its batcher."""
        while self.leases:
            await self._released.wait()
        await self.batcher.stop()


@dataclass(eq=False)
class ModelEntry:
    """One version in the repository, whatever its state."""

    ref: ArtifactRef
    state: ModelState = ModelState.LOADING
    reason: str | None = None
    served: ServedModel | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version

    def not_ready(self) -> ModelNotReady:
        detail = f": {self.reason}" if self.reason else ""
        return ModelNotReady(f"model {self.name} version {self.version} is {self.state}{detail}")


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: ModelState
    reason: str | None = None
    provider: str | None = None
    load_seconds: float | None = None


@dataclass(frozen=True)
class ModelStatus:
    name: str
    default_version: int | None
    versions: list[VersionStatus]


class ModelRegistry:
    """Owns every model version: loads them, resolves requests to them, closes them."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime_options: RuntimeOptions) -> None:
        self.settings = settings
        self.metrics = metrics
        self.runtime_options = runtime_options
        self.entries: dict[str, dict[int, ModelEntry]] = {}
        self.load_finished = False

    @property
    def root(self) -> Path:
        return self.settings.model_repository

    # -- lifecycle ---------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every version in the repository. One that fails is marked failed with its
        reason; the others load and serve regardless."""
        refs = scan(self.root, self.settings.model_name)
        for ref in refs:
            self.entries.setdefault(ref.name, {})[ref.version] = ModelEntry(ref)
        if not refs:
            log.warning("no model found in %s: export one with `python -m model_export --out %s`",
                        self.root, self.root)
        try:
            for ref in refs:
                await self._load(self.entries[ref.name][ref.version])
        finally:
            self.load_finished = True

    async def _load(self, entry: ModelEntry) -> None:
        try:
            artifact = await asyncio.to_thread(load_artifact, entry.ref)
            runtime = await asyncio.to_thread(load_model, artifact, self.runtime_options)
        except (ArtifactError, ValueError, OSError) as exc:
            self._fail(entry, str(exc))
        except Exception as exc:  # onnxruntime and onnx raise their own types on bad files
            self._fail(entry, f"{type(exc).__name__}: {exc}")
        else:
            entry.served = ServedModel(runtime, self._batcher(runtime))
            entry.served.batcher.start()
            entry.state = ModelState.READY
            log.info("model %s version %d ready on %s (%.2f s)", entry.name, entry.version,
                     runtime.provider, runtime.load_seconds)
        self._update_gauges()

    def _batcher(self, runtime: ModelRuntime) -> DynamicBatcher:
        batching = self.settings.batching_for(runtime.name)
        return DynamicBatcher(
            runtime,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_size=batching.max_queue_size,
            arrival_wait_ms=batching.batch_arrival_wait_ms,
            observer=self.metrics.observer(runtime.name, runtime.version),
            label=f"{runtime.name}-{runtime.version}",
        )

    def _fail(self, entry: ModelEntry, reason: str) -> None:
        entry.state, entry.reason = ModelState.FAILED, reason
        log.error("model %s version %d failed to load: %s", entry.name, entry.version, reason)

    async def close(self) -> None:
        for versions in self.entries.values():
            for entry in versions.values():
                if entry.served is not None:
                    await entry.served.batcher.stop()

    def _update_gauges(self) -> None:
        states = [e.state for versions in self.entries.values() for e in versions.values()]
        self.metrics.models_loaded.set(states.count(ModelState.READY))
        self.metrics.models_failed.set(states.count(ModelState.FAILED))

    # -- discovery ---------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.load_finished:
            return False, "loading models"
        if not any(e.state is ModelState.READY for v in self.entries.values() for e in v.values()):
            return False, f"no model is ready in {self.root}"
        return True, "ready"

    def names(self) -> list[str]:
        return sorted(self.entries)

    def versions(self, name: str) -> list[int]:
        return sorted(self._versions(name))

    def status(self) -> list[ModelStatus]:
        return [self._model_status(name) for name in self.names()]

    def _model_status(self, name: str) -> ModelStatus:
        versions = self.entries[name]
        ready = [v for v, e in versions.items() if e.state is ModelState.READY]
        return ModelStatus(
            name=name,
            default_version=max(ready) if ready else None,
            versions=[self._version_status(versions[v]) for v in sorted(versions, reverse=True)],
        )

    @staticmethod
    def _version_status(entry: ModelEntry) -> VersionStatus:
        runtime = entry.served.runtime if entry.served is not None else None
        return VersionStatus(
            version=entry.version,
            state=entry.state,
            reason=entry.reason,
            provider=runtime.provider if runtime is not None else None,
            load_seconds=round(runtime.load_seconds, 3) if runtime is not None else None,
        )

    def default_model_name(self) -> str:
        if self.settings.default_model:
            return self.settings.default_model
        if len(self.entries) == 1:
            return next(iter(self.entries))
        if not self.entries:
            raise NotFound(f"no model is served: the repository {self.root} is empty")
        raise BadRequest(
            f"{len(self.entries)} models are served ({', '.join(self.names())}): name one in "
            "the path (/v1/models/{name}/predict) or set CONVSCOPE_DEFAULT_MODEL"
        )

    # -- resolution --------------------------------------------------------------------

    def _versions(self, name: str) -> dict[int, ModelEntry]:
        versions = self.entries.get(name)
        if versions is None:
            if not self.load_finished:
                raise ModelNotReady(f"model {name} is not known yet: the repository is still loading")
            raise UnknownModel(name, self.names())
        return versions

    def entry(self, name: str | None, version: int | None = None) -> ModelEntry:
        """The entry a request means: the named version, or the newest ready one. Unknown
        names and versions are 404s naming the valid ones; a version that cannot serve
        raises ModelNotReady (503) saying why."""
        name = name if name is not None else self.default_model_name()
        versions = self._versions(name)
        if version is None:
            ready = [v for v, e in versions.items() if e.state is ModelState.READY]
            if ready:
                return versions[max(ready)]
            if not self.load_finished:
                raise ModelNotReady(f"model {name} is still loading")
            reasons = "; ".join(f"version {v}: {e.state}{f' ({e.reason})' if e.reason else ''}"
                                for v, e in sorted(versions.items()))
            raise ModelNotReady(f"model {name} has no version ready ({reasons})")
        found = versions.get(version)
        if found is None:
            raise UnknownVersion(name, version, sorted(versions))
        return found

    def resolve(self, name: str | None, version: int | None = None) -> ServedModel:
        """The served model for a request, or the 404/503 that says why there is none."""
        entry = self.entry(name, version)
        if entry.state is not ModelState.READY or entry.served is None:
            raise entry.not_ready()
        return entry.served

    @contextmanager
    def lease(self, name: str | None, version: int | None = None) -> Iterator[ServedModel]:
        """Resolve and hold a model for one request: it is not unloaded while held."""
        model = self.resolve(name, version)
        model.acquire()
        try:
            yield model
        finally:
            model.release()

