"""Turning a version on disk into a version that serves.

The registry decides *when* a version loads and unloads; this module knows *how*: read and
check the artifact, open its onnxruntime sessions, read its channel view, start its
batcher, build its explainer. What comes out is a ``LoadedVersion``, the one object a
request holds (under a lease) for as long as it is answered.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from artifact import ArtifactError, Metadata
from service.errors import Unprocessable
from service.explain import Explainer, ExplainOptions
from service.inference.batching import BatchingPolicy, DynamicBatcher
from service.inference.preprocessing import InputSpec
from service.metrics import Metrics
from service.models.channel_view import ChannelView
from service.models.repository import ArtifactRef, Named, load_artifact
from service.models.runtime import ModelRuntime, RuntimeOptions, load_model
from service.models.signature import ModelSignature

# An explanation's forward passes go to the batcher in batches of at most this many images
# (and of no more than the model's max_batch_size); while predictions flow, the batcher
# holds them shorter (DynamicBatcher.explain_batch_images).
EXPLAIN_BATCH_IMAGES = 16


class LoadError(Exception):
    """A version that cannot serve; the message is the reason the registry lists."""


@dataclass(eq=False)
class LoadedVersion(Named):
    """A version ready to serve: its sessions, its batcher, its channel view and samples (read
    once; empty when the artifact has none), its explainer, and how many requests hold it."""

    ref: ArtifactRef
    runtime: ModelRuntime
    batcher: DynamicBatcher
    channel_view: ChannelView
    explainer: Explainer | None = None  # None: the graph could not be analysed (runtime.explain_unavailable)
    leases: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def metadata(self) -> Metadata:
        return self.runtime.metadata

    @property
    def signature(self) -> ModelSignature:
        return self.runtime.signature

    @property
    def spec(self) -> InputSpec:
        return self.runtime.spec

    @cached_property
    def digest(self) -> str:
        """The version's identity: its files' checksums (another export under the same
        number changes it) with its name and number."""
        files = self.metadata.files
        text = "".join(f"{name}:{files[name].sha256}\n" for name in sorted(files))
        return hashlib.sha256(f"{text}{self.name}\n{self.version}".encode()).hexdigest()[:32]

    def require_explainer(self) -> Explainer:
        """The explainer, or the 422 that says why this model has none."""
        if self.explainer is None:
            why = self.runtime.explain_unavailable or "its graph was not analysed"
            raise Unprocessable(f"model {self.name} version {self.version} cannot be explained: {why}")
        return self.explainer

    def acquire(self) -> None:
        self.leases += 1
        self._released.clear()

    def release(self) -> None:
        self.leases -= 1
        if self.leases == 0:
            self._released.set()

    async def stop(self) -> None:
        """Wait for every request holding this version, then stop its batcher."""
        while self.leases:
            await self._released.wait()
        await self.batcher.stop()


class Loader:
    """Builds LoadedVersions with this process's options."""

    def __init__(self, runtime: RuntimeOptions, batching: BatchingPolicy, explanations: ExplainOptions,
                 metrics: Metrics, *, reducing_gap: float | None) -> None:
        self.runtime = runtime
        self.batching = batching
        self.explanations = explanations
        self.metrics = metrics
        self.reducing_gap = reducing_gap

    async def load(self, ref: ArtifactRef) -> LoadedVersion:
        """Read, check, open and warm up one version; LoadError with the reason when it cannot
        serve. Its batcher is started: it serves as soon as the registry says so."""
        try:
            artifact = await asyncio.to_thread(load_artifact, ref)
            # A listed channel_view.npz / samples.npz that cannot be read fails the version
            # here, at load, with the reason (a writer's bug), rather than on a user's click.
            channel_view = await asyncio.to_thread(ChannelView.from_artifact, artifact)
            runtime = await asyncio.to_thread(load_model, artifact, self.runtime, reducing_gap=self.reducing_gap)
        except (ArtifactError, ValueError, OSError) as exc:
            raise LoadError(str(exc)) from None
        except Exception as exc:  # onnxruntime and onnx raise their own types on bad files
            raise LoadError(f"{type(exc).__name__}: {exc}") from None
        batcher = self._batcher(ref, runtime)
        loaded = LoadedVersion(ref, runtime, batcher, channel_view, self._explainer(runtime, batcher))
        batcher.start()
        return loaded

    def _batcher(self, ref: ArtifactRef, runtime: ModelRuntime) -> DynamicBatcher:
        options = self.batching.for_model(ref.name)
        return DynamicBatcher(
            runtime,
            max_batch_size=options.max_batch_size,
            max_queue_delay_ms=options.max_queue_delay_ms,
            max_queue_size=options.max_queue_size,
            arrival_wait_ms=options.arrival_wait_ms,
            observer=self.metrics.observer(ref.name, ref.version),
            label=f"{ref.name}-{ref.version}",
            # Full batches or overlap, from what this model's runs cost (measured at load).
            policy=runtime.batch_costs.policy() if runtime.batch_costs is not None else None,
        )

    def _explainer(self, runtime: ModelRuntime, batcher: DynamicBatcher) -> Explainer | None:
        """The engine's view of the graph comes from the runtime's load (its heads share the
        runtime's weights); the passes go through the batcher, which sizes them."""
        if runtime.explainable is None:
            return None
        return Explainer(runtime.explainable, max_passes=self.explanations.max_passes,
                         batch_size=min(EXPLAIN_BATCH_IMAGES, batcher.max_batch_size),
                         batch_images=batcher.explain_batch_images)
