"""The model registry: every version in the repository, its state, and the one place that
turns ``(name, version)`` into a model that can serve.

A version is *loading*, *ready*, *failed* (with its reason), *unloading* or *unloaded*.
Requests hold a lease on the served model they resolved (``ModelRegistry.lease``), taken in
the same step as the resolution so nothing can unload the model in between; unloading a
version waits for its leases to end before it stops the batcher and drops the sessions.
That is what lets versions come and go while requests are in flight:

* ``sync`` makes the registry match the repository on disk (the poll calls it): a new
  version is loaded and warmed up while the others serve, and becomes its model's default
  the moment it is ready (the default is chosen among the ready versions by the
  operator's ``default_precision``: the newest one, unless it is an int8 version that
  runs slower here than its float version; one assignment, no gap); a version or a whole
  model gone from disk is taken out of resolution at once and
  unloaded when its last request ends; a failed version is tried again when its files change;
* ``load_model`` / ``unload_model`` do the same for one model on request (Triton's model
  repository extension); an unloaded model stays unloaded, whatever the poll finds, until
  it is loaded again.

One lock orders these changes; requests never take it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from artifact import Precision
from service.errors import (
    BadRequest,
    LoadFailed,
    ModelNotReady,
    NotFound,
    UnknownModel,
    UnknownVersion,
)
from service.metrics import Metrics
from service.models.loader import LoadedVersion, Loader, LoadError
from service.models.repository import ArtifactRef, DefaultPrecision, Named, RepositoryOptions

log = logging.getLogger("convscope.registry")

class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"
    UNLOADED = "unloaded"  # on request: stays so until loaded again


# What the files of a version directory look like: (name, size, mtime) of each. A failed
# version is tried again when this changes (an export copied in by hand, now complete).
Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(path: Path) -> Fingerprint:
    try:
        stats = [(f.name, f.stat()) for f in path.iterdir() if f.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))


@dataclass(eq=False)
class ModelEntry(Named):
    """One version in the repository, whatever its state."""

    ref: ArtifactRef
    state: ModelState = ModelState.LOADING
    reason: str | None = None
    served: LoadedVersion | None = None
    fingerprint: Fingerprint | None = None

    @property
    def precision(self) -> Precision | None:
        """float32 or int8, once loaded (the metadata says); None before."""
        return self.served.metadata.precision if self.served is not None else None

    @property
    def quantized_from(self) -> int | None:
        if self.served is None or self.served.metadata.quantization is None:
            return None
        return self.served.metadata.quantization.quantized_from

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
    precision: str | None = None  # float32 | int8, once loaded
    quantized_from: int | None = None  # an int8 version's float version


def default_entry(versions: dict[int, ModelEntry], policy: DefaultPrecision) -> ModelEntry | None:
    """The ready version that serves a model by default under ``policy``; None: none is ready."""
    ready = {v: e for v, e in versions.items() if e.state is ModelState.READY and e.served is not None}
    if not ready:
        return None
    newest = ready[max(ready)]
    if policy in (DefaultPrecision.FLOAT32, DefaultPrecision.INT8):
        wanted = Precision(policy.value)
        chosen = [v for v, e in ready.items() if e.precision is wanted]
        return ready[max(chosen)] if chosen else newest
    if policy is DefaultPrecision.AUTO and newest.precision is Precision.INT8:
        original = ready.get(newest.quantized_from or 0)
        if original is not None and not _faster(newest, original):
            return original
    return newest


def _faster(entry: ModelEntry, than: ModelEntry) -> bool:
    """Whether ``entry``'s predictions run faster here than ``than``'s, as timed at load (the
    largest batch size both timed): an int8 graph runs slower than float on some providers
    (CUDA runs the Q/DQ pairs of a graph it cannot fuse) and for some models (TinyVGG)."""
    assert entry.served is not None and than.served is not None
    mine, theirs = entry.served.runtime.batch_costs, than.served.runtime.batch_costs
    if mine is None or theirs is None:
        return True
    common = set(mine.seconds) & set(theirs.seconds)
    if not common:
        return True
    size = max(common)
    return mine.seconds[size] < theirs.seconds[size]


@dataclass(frozen=True)
class IndexEntry:
    """One version for the repository index: on disk, in the registry, or both. ``state``
    None: on disk but not loaded (the poll is off, or has not run since)."""

    name: str
    version: int
    state: ModelState | None
    reason: str | None = None


@dataclass(frozen=True)
class ModelStatus:
    name: str
    default_version: int | None
    versions: list[VersionStatus]


class ModelRegistry:
    """Owns every model version: loads them, resolves requests to them, closes them."""

    def __init__(self, options: RepositoryOptions, loader: Loader, metrics: Metrics) -> None:
        self.options = options
        self.loader = loader
        self.metrics = metrics
        self.entries: dict[str, dict[int, ModelEntry]] = {}
        self.load_finished = False
        self.held: set[str] = set()  # unloaded on request: sync leaves them alone
        self._changing = asyncio.Lock()

    @property
    def root(self) -> Path:
        return self.options.root

    def scan(self) -> list[ArtifactRef]:
        """The versions on disk now, named as the options say (a single model's name for a
        single-model layout). Blocking: call it on a thread."""
        return self.options.scan()

    # -- lifecycle ---------------------------------------------------------------------

    async def load_all(self) -> None:
        """Load every version in the repository. One that fails is marked failed with its
        reason; the others load and serve regardless."""
        async with self._changing:
            refs = await asyncio.to_thread(self.scan)
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

    async def sync(self, refs: Iterable[ArtifactRef]) -> None:
        """Make the registry match ``refs``, a scan of the repository: load new versions, try
        failed ones again whose files changed, unload versions and models no longer there.
        Models unloaded on request are left as they are."""
        async with self._changing:
            on_disk = {(r.name, r.version): r for r in refs}
            self.held &= {name for name, _ in on_disk}
            prints = await asyncio.to_thread(lambda: {key: fingerprint(r.path) for key, r in on_disk.items()})
            for key, ref in sorted(on_disk.items()):
                if ref.name in self.held:
                    continue
                entry = self.entries.get(ref.name, {}).get(ref.version)
                if entry is None:
                    log.info("model %s version %d appeared in the repository: loading it", ref.name, ref.version)
                    await self._add(ref)
                elif entry.state is ModelState.FAILED and entry.fingerprint != prints[key]:
                    log.info("model %s version %d changed on disk: loading it again", ref.name, ref.version)
                    await self._reload(entry)
            gone = [e for versions in self.entries.values() for e in versions.values()
                    if (e.name, e.version) not in on_disk]
            for entry in gone:
                log.info("model %s version %d is gone from the repository: unloading it", entry.name, entry.version)
            await self._unload(gone, forget=True)

    async def load_model(self, name: str) -> None:
        """Read one model's versions from disk again (the repository extension's load): new
        versions and failed or unloaded ones are loaded, ready ones kept, ones gone from disk
        unloaded. LoadFailed (400) names any version that failed, and what still serves."""
        async with self._changing:
            refs = await asyncio.to_thread(self.scan)
            mine = {r.version: r for r in refs if r.name == name}
            if not mine:
                raise UnknownModel(name, sorted({r.name for r in refs}))
            self.held.discard(name)
            failed: list[ModelEntry] = []
            for version, ref in sorted(mine.items()):
                entry = self.entries.get(name, {}).get(version)
                if entry is None:
                    entry = await self._add(ref)
                elif entry.state in (ModelState.FAILED, ModelState.UNLOADED):
                    await self._reload(entry)
                else:
                    continue  # ready: a served version's files are not read again
                if entry.state is ModelState.FAILED:
                    failed.append(entry)
            await self._unload([e for v, e in self.entries.get(name, {}).items() if v not in mine], forget=True)
            if failed:
                ready = [v for v, e in self.entries[name].items() if e.state is ModelState.READY]
                serving = f"version {max(ready)} serves" if ready else "no version of it serves"
                problems = "; ".join(f"version {e.version}: {e.reason}" for e in failed)
                raise LoadFailed(f"model {name} failed to load ({problems}); {serving}")

    async def unload_model(self, name: str) -> None:
        """Unload every version of a model once its requests have ended (the repository
        extension's unload). Until it is loaded again it answers 503 and the poll leaves it be."""
        async with self._changing:
            versions = self._versions(name)
            self.held.add(name)
            await self._unload([e for e in versions.values() if e.state is not ModelState.UNLOADED], forget=False)

    async def _add(self, ref: ArtifactRef) -> ModelEntry:
        entry = ModelEntry(ref)
        self.entries.setdefault(ref.name, {})[ref.version] = entry
        await self._load(entry)
        return entry

    async def _reload(self, entry: ModelEntry) -> None:
        entry.state, entry.reason = ModelState.LOADING, None
        self._update_gauges()
        await self._load(entry)

    async def _unload(self, entries: list[ModelEntry], *, forget: bool) -> None:
        """Take ``entries`` out of resolution at once, then stop each when its last request
        ends; ``forget``: drop them from the registry (gone from disk), else mark them unloaded."""
        stopping = []
        for entry in entries:
            stopping.append((entry, entry.served))
            entry.state, entry.reason, entry.served = ModelState.UNLOADING, None, None
        self._update_gauges()
        for entry, served in stopping:
            if served is not None:
                await served.stop()
                self.metrics.forget(entry.name, entry.version)
                self.metrics.model_unloads.labels(entry.name).inc()
                log.info("model %s version %d unloaded", entry.name, entry.version)
            if forget:
                versions = self.entries.get(entry.name, {})
                if versions.get(entry.version) is entry:
                    del versions[entry.version]
                if not versions:
                    self.entries.pop(entry.name, None)
            else:
                entry.state = ModelState.UNLOADED
                entry.reason = f"unloaded on request; POST /v2/repository/models/{entry.name}/load loads it again"
        self._update_gauges()

    async def _load(self, entry: ModelEntry) -> None:
        started = time.perf_counter()
        entry.fingerprint = await asyncio.to_thread(fingerprint, entry.ref.path)
        try:
            entry.served = await self.loader.load(entry.ref)
        except LoadError as exc:
            self._fail(entry, str(exc))
        else:
            # From this assignment on, the newest ready version, which may be this one, is
            # its model's default: the switch is this one step, with no await around it.
            entry.state = ModelState.READY
            runtime = entry.served.runtime
            log.info("model %s version %d ready on %s (%.2f s)%s", entry.name, entry.version,
                     runtime.provider, runtime.load_seconds,
                     f"; {runtime.batch_costs.describe()}" if runtime.batch_costs is not None else "")
        if entry.state is ModelState.READY:
            self._say_precision(entry)
        outcome = "success" if entry.state is ModelState.READY else "failure"
        self.metrics.model_loads.labels(entry.name, outcome).inc()
        self.metrics.model_load_seconds.labels(entry.name).observe(time.perf_counter() - started)
        self._update_gauges()

    def _say_precision(self, loaded: ModelEntry) -> None:
        """When an int8 version and its float version are both ready: which runs faster here,
        and which serves by default (the operator's CONVSCOPE_DEFAULT_PRECISION)."""
        versions = self.entries.get(loaded.name, {})
        pairs = [(e, versions.get(e.quantized_from or 0)) for e in versions.values() if e.precision is Precision.INT8]
        for int8, original in pairs:
            if original is None or original.state is not ModelState.READY or loaded not in (int8, original):
                continue
            default = default_entry(versions, self.options.default_precision)
            log.info("model %s: int8 version %d runs %s here than its float version %d (timed at load); version %s "
                     "serves by default (default precision: %s)", loaded.name, int8.version,
                     "faster" if _faster(int8, original) else "slower", original.version,
                     default.version if default is not None else "none", self.options.default_precision.value)

    def _fail(self, entry: ModelEntry, reason: str) -> None:
        entry.state, entry.reason = ModelState.FAILED, reason
        log.error("model %s version %d failed to load: %s", entry.name, entry.version, reason)

    async def close(self) -> None:
        """Stop every batcher now (the drain has already let requests finish); a request
        still waiting in one is answered 503."""
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

    async def index(self) -> list[IndexEntry]:
        """Every version on disk or in the registry, by name then version (the repository
        extension's index): what could be loaded as well as what is."""
        refs = await asyncio.to_thread(self.scan)
        found = {(r.name, r.version): IndexEntry(r.name, r.version, None) for r in refs}
        for versions in self.entries.values():
            for e in versions.values():
                found[(e.name, e.version)] = IndexEntry(e.name, e.version, e.state, e.reason)
        return [found[key] for key in sorted(found)]

    def status(self) -> list[ModelStatus]:
        return [self._model_status(name) for name in self.names()]

    def model_status(self, name: str) -> ModelStatus:
        """One model's versions and default (404 naming the models for an unknown one)."""
        self._versions(name)
        return self._model_status(name)

    def _model_status(self, name: str) -> ModelStatus:
        versions = self.entries[name]
        default = default_entry(versions, self.options.default_precision)
        return ModelStatus(
            name=name,
            default_version=default.version if default is not None else None,
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
            precision=entry.precision.value if entry.precision is not None else None,
            quantized_from=entry.quantized_from,
        )

    def default_model_name(self) -> str:
        if self.options.default_model:
            return self.options.default_model
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
        """The entry a request means: the named version, or the default one (``default_entry``:
        the newest ready one, as the operator's ``default_precision`` says). Unknown names
        and versions are 404s naming the valid ones; a version that cannot serve raises
        ModelNotReady (503) saying why."""
        name = name if name is not None else self.default_model_name()
        versions = self._versions(name)
        if version is None:
            default = default_entry(versions, self.options.default_precision)
            if default is not None:
                return default
            if not self.load_finished:
                raise ModelNotReady(f"model {name} is still loading")
            reasons = "; ".join(f"version {v}: {e.state}{f' ({e.reason})' if e.reason else ''}"
                                for v, e in sorted(versions.items()))
            raise ModelNotReady(f"model {name} has no version ready ({reasons})")
        found = versions.get(version)
        if found is None:
            raise UnknownVersion(name, version, sorted(versions))
        return found

    def resolve(self, name: str | None, version: int | None = None) -> LoadedVersion:
        """The served model for a request, or the 404/503 that says why there is none."""
        entry = self.entry(name, version)
        if entry.state is not ModelState.READY or entry.served is None:
            raise entry.not_ready()
        return entry.served

    @contextmanager
    def lease(self, name: str | None, version: int | None = None) -> Iterator[LoadedVersion]:
        """Resolve and hold a model for one request: it is not unloaded while held."""
        model = self.resolve(name, version)
        model.acquire()
        try:
            yield model
        finally:
            model.release()

