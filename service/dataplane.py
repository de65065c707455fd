"""The data plane: one object that does the work behind every endpoint.

REST routes (v1 and the Open Inference Protocol's v2) stay thin: they parse HTTP and
call this. Anything that can go wrong for a client raises a ServiceError subclass that
carries its HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from service import encoding as enc
from service.batching import DynamicBatcher, InferenceResult
from service.errors import (
    BadRequest,
    ModelFailed,
    ModelNotReady,
    NotFound,
    PayloadTooLarge,
    one_of,
)
from service.metrics import Metrics
from service.preprocessing import load, open_checked, preprocess
from service.repository import ArtifactError, ArtifactRef, load_artifact, scan
from service.runtime import (
    ModelRuntime,
    RuntimeOptions,
    load_model,
)
from service.settings import Settings

log = logging.getLogger("convscope.dataplane")

# Decoding and resizing an image this small takes tens of microseconds: less than handing
# it to a worker thread and back (the benchmark's 28 px digits gained ~15% images/s).
INLINE_PIXELS = 64 * 64
# Likewise for encoding: all of TinyVGG's maps for one digit are ~22k values (~0.1 ms).
INLINE_MAP_VALUES = 64 * 1024


@dataclass
class ModelEntry:
    """One version in the repository, whatever its state."""

    ref: ArtifactRef
    state: str = "loading"  # loading | ready | failed
    reason: str | None = None
    runtime: ModelRuntime | None = None
    batcher: DynamicBatcher | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "state": self.state}
        if self.reason:
            out["reason"] = self.reason
        if self.runtime is not None:
            out["provider"] = self.runtime.provider
            out["load_seconds"] = round(self.runtime.load_seconds, 3)
        return out


@dataclass
class Timings:
    """Where one request's time went, in seconds."""

    decode: float = 0.0
    preprocess: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    encode: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def as_ms(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        parts = {
            "decode": self.decode, "preprocess": self.preprocess, "queue": self.queue,
            "inference": self.inference, "encode": self.encode, "total": total,
        }
        return {k: round(v * 1000.0, 3) for k, v in parts.items()}


@dataclass
class PreparedBatch:
    tensor: np.ndarray  # [N, C, H, W] float32
    timings: Timings


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k_predictions(probabilities: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """[{label, index, probability}], best first, for one image."""
    k = min(k, probabilities.shape[-1])
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"label": labels[i], "index": int(i), "probability": float(probabilities[i])} for i in best
    ]


class DataPlane:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.entries: dict[str, dict[int, ModelEntry]] = {}
        self.load_finished = False
        self._pool = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="preprocess")
        self._runtime_options = RuntimeOptions.from_settings(settings)

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self) -> None:
        """Load every version in the repository. One that fails is marked failed with its
        reason; the others load and serve regardless."""
        root = self.settings.model_repository
        refs = scan(root)
        for ref in refs:
            self.entries.setdefault(ref.name, {})[ref.version] = ModelEntry(ref)
        if not refs:
            log.warning("no model found in %s: export one with `python -m model_export --out %s`", root, root)
        log.info("onnxruntime %s, providers available: %s; using %s", ort.__version__,
                 ", ".join(ort.get_available_providers()), ", ".join(self._runtime_options.providers))
        for ref in refs:
            entry = self.entries[ref.name][ref.version]
            try:
                artifact = await asyncio.to_thread(load_artifact, ref)
                runtime = await asyncio.to_thread(load_model, artifact, self._runtime_options)
            except (ArtifactError, ValueError, OSError) as exc:
                entry.state, entry.reason = "failed", str(exc)
            except Exception as exc:  # onnxruntime and onnx raise their own types on bad files
                entry.state, entry.reason = "failed", f"{type(exc).__name__}: {exc}"
            else:
                max_batch, delay_ms, queue_size, arrival_wait_ms = self.settings.batching_for(ref.name)
                entry.runtime = runtime
                entry.batcher = DynamicBatcher(
                    runtime,
                    max_batch_size=max_batch,
                    max_queue_delay_ms=delay_ms,
                    max_queue_size=queue_size,
                    arrival_wait_ms=arrival_wait_ms,
                    observer=self.metrics.observer(ref.name, ref.version),
                    label=f"{ref.name}-{ref.version}",
                )
                entry.batcher.start()
                entry.state = "ready"
            if entry.state == "ready":
                log.info("model %s version %d ready on %s (%.2f s)", ref.name, ref.version,
                         entry.runtime.provider if entry.runtime else "?", entry.runtime.load_seconds if entry.runtime else 0)
            else:
                log.error("model %s version %d failed to load: %s", ref.name, ref.version, entry.reason)
            self._update_model_gauges()
        self.load_finished = True

    async def close(self) -> None:
        for versions in self.entries.values():
            for entry in versions.values():
                if entry.batcher is not None:
                    await entry.batcher.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _update_model_gauges(self) -> None:
        states = [e.state for v in self.entries.values() for e in v.values()]
        self.metrics.models_loaded.set(states.count("ready"))
        self.metrics.models_failed.set(states.count("failed"))

    # -- health and discovery ------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.load_finished:
            return False, "loading models"
        ready = [e for v in self.entries.values() for e in v.values() if e.state == "ready"]
        if not ready:
            return False, f"no model is ready in {self.settings.model_repository}"
        return True, "ready"

    def list_models(self) -> list[dict[str, Any]]:
        models = []
        for name in sorted(self.entries):
            versions = self.entries[name]
            ready = [v for v, e in versions.items() if e.state == "ready"]
            models.append({
                "name": name,
                "default_version": max(ready) if ready else None,
                "versions": [versions[v].summary() for v in sorted(versions, reverse=True)],
            })
        return models

    def default_model_name(self) -> str:
        if self.settings.default_model:
            return self.settings.default_model
        if len(self.entries) == 1:
            return next(iter(self.entries))
        if not self.entries:
            raise NotFound(f"no model is served: the repository {self.settings.model_repository} is empty")
        raise BadRequest(
            f"{len(self.entries)} models are served ({', '.join(sorted(self.entries))}): name one in "
            "the path (/v1/models/{name}/predict) or set CONVSCOPE_DEFAULT_MODEL"
        )

    def entry(self, name: str | None, version: int | None = None) -> ModelEntry:
        """The entry to serve: the named version, or the newest ready one."""
        name = name if name is not None else self.default_model_name()
        versions = self.entries.get(name)
        if versions is None:
            raise NotFound(one_of("model", name, sorted(self.entries)))
        if version is None:
            ready = [v for v, e in versions.items() if e.state == "ready"]
            if not ready:
                if not self.load_finished:
                    raise ModelNotReady(f"model {name} is still loading")
                reasons = "; ".join(f"version {v}: {e.reason}" for v, e in sorted(versions.items()))
                raise ModelNotReady(f"model {name} has no version ready ({reasons})")
            return versions[max(ready)]
        found = versions.get(version)
        if found is None:
            raise NotFound(f"model {name} has no version {version}; valid: {', '.join(map(str, sorted(versions)))}")
        if found.state != "ready":
            raise ModelNotReady(f"model {name} version {version} is {found.state}"
                                + (f": {found.reason}" if found.reason else ""))
        return found

    def model(self, name: str | None, version: int | None = None) -> ModelRuntime:
        runtime = self.entry(name, version).runtime
        assert runtime is not None  # ready entries always have one
        return runtime

    def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        runtime = self.model(name, version)
        out = dict(runtime.metadata)
        out["name"], out["version"] = runtime.name, runtime.version
        out["provider"] = runtime.provider
        out["available_versions"] = sorted(self.entries[name])
        return out

    def select_layers(self, model: ModelRuntime, spec: str | None) -> list[str]:
        """Parse ``layers=`` (comma separated names, or ``all``); unknown names are a 404
        that lists the valid ones."""
        if spec is None or not spec.strip():
            return []
        if spec.strip() == "all":
            return list(model.layer_names)
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        for name in wanted:
            if name not in model.layer_names:
                raise NotFound(one_of("layer", name, model.layer_names) + f" (model {model.name})")
        return list(dict.fromkeys(wanted))  # keep order, drop repeats

    def layer(self, model: ModelRuntime, name: str) -> dict[str, Any]:
        try:
            return model.layer(name)
        except KeyError:
            raise NotFound(one_of("layer", name, model.layer_names) + f" (model {model.name})") from None

    # -- the work ----------------------------------------------------------------------------

    @staticmethod
    def _finish(image: Image.Image, model: ModelRuntime, header_seconds: float) -> tuple[np.ndarray, float, float]:
        """Decode the pixels of a header-checked image and preprocess them."""
        t0 = time.perf_counter()
        image = load(image, model.spec)
        t1 = time.perf_counter()
        tensor = preprocess(image, model.spec)
        return tensor, header_seconds + t1 - t0, time.perf_counter() - t1

    def check_count(self, images: int) -> None:
        """The per-request image limit, also for requests that bring tensors, not images."""
        if not images:
            raise BadRequest("the request holds no image")
        if images > self.settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{images} images in one request; the limit is "
                f"{self.settings.max_images_per_request} (CONVSCOPE_MAX_IMAGES_PER_REQUEST)"
            )

    async def prepare(self, model: ModelRuntime, images: list[bytes]) -> PreparedBatch:
        """Decode and preprocess images. Only the headers are read on the event loop; an
        image of more than INLINE_PIXELS is decoded on a worker thread, a smaller one (a
        28 px digit) right here, where it costs less than the hand-off would."""
        timings = Timings()
        self.check_count(len(images))
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[tuple[np.ndarray, float, float]]] = []
        for data in images:
            t0 = time.perf_counter()
            image = open_checked(data, max_pixels=self.settings.max_image_pixels)
            header = time.perf_counter() - t0
            if image.width * image.height <= INLINE_PIXELS:
                done: asyncio.Future[tuple[np.ndarray, float, float]] = loop.create_future()
                done.set_result(self._finish(image, model, header))
                pending.append(done)
            else:
                pending.append(loop.run_in_executor(self._pool, self._finish, image, model, header))
        results = await asyncio.gather(*pending)
        timings.decode = sum(r[1] for r in results)
        timings.preprocess = sum(r[2] for r in results)
        tensor = results[0][0][None] if len(results) == 1 else np.stack([r[0] for r in results])
        return PreparedBatch(tensor, timings)

    async def run(self, entry: ModelEntry, tensor: np.ndarray, outputs: tuple[str, ...]) -> InferenceResult:
        """Through the model's batcher. ``outputs`` are graph output names."""
        assert entry.batcher is not None
        return await entry.batcher.infer(tensor, outputs)

    def check_budget(self, model: ModelRuntime, layers: list[str], images: int, encoding: str, dtype: str) -> None:
        budget = self.settings.max_feature_map_bytes
        estimate = images * sum(
            enc.estimate_bytes(model.layer(n)["output_shape"][1:], encoding, dtype) for n in layers
        )
        if estimate > budget:
            raise PayloadTooLarge(
                f"the requested feature maps would take about {estimate} bytes encoded as "
                f"{encoding}, over the budget of {budget} bytes (CONVSCOPE_MAX_FEATURE_MAP_BYTES); "
                "ask for fewer layers or images, encoding=stats or png, or dtype=float16"
            )

    async def predict(
        self,
        name: str | None,
        version: int | None,
        images: list[bytes],
        *,
        top_k: int = 5,
        layers: str | None = None,
        encoding: str = "stats",
        dtype: str = "float32",
    ) -> tuple[dict[str, Any], Timings]:
        """Class predictions for each image and, when asked, the chosen layers' feature maps."""
        entry = self.entry(name, version)
        model = entry.runtime
        assert model is not None
        chosen = self.select_layers(model, layers)
        self.check_count(len(images))
        if chosen:
            self.check_budget(model, chosen, len(images), encoding, dtype)
        assert entry.batcher is not None
        with entry.batcher.arriving(len(images)):
            prepared = await self.prepare(model, images)
        timings = prepared.timings
        result = await self.run(entry, prepared.tensor, (model.output_name, *chosen))
        timings.queue, timings.inference = result.queue_seconds, result.compute_seconds

        started = time.perf_counter()
        logits = result.outputs[0]
        if not np.isfinite(logits).all():
            raise ModelFailed(f"model {model.name} version {model.version} produced NaN or infinite class scores")
        probabilities = softmax(logits)
        maps = result.outputs[1:]
        encode = (self._encode_results, model, probabilities, chosen, maps, top_k, encoding, dtype)
        if sum(m.size for m in maps) > INLINE_MAP_VALUES:  # real CPU: off the event loop
            per_image = await asyncio.get_running_loop().run_in_executor(self._pool, *encode)
        else:  # top-k of a few scores, or small maps: the hand-off would cost more than the work
            per_image = encode[0](*encode[1:])
        timings.encode = time.perf_counter() - started
        body: dict[str, Any] = {"model": model.name, "version": model.version}
        if len(per_image) == 1:
            body.update(per_image[0])
        else:
            body["results"] = per_image
        return body, timings

    def _encode_results(
        self,
        model: ModelRuntime,
        probabilities: np.ndarray,
        layers: list[str],
        maps: list[np.ndarray],
        top_k: int,
        encoding: str,
        dtype: str,
    ) -> list[dict[str, Any]]:
        out = []
        for i in range(probabilities.shape[0]):
            item: dict[str, Any] = {"predictions": top_k_predictions(probabilities[i], model.labels, top_k)}
            if layers:
                item["feature_maps"] = {
                    name: enc.encode_feature_map(values[i], encoding, dtype, name) for name, values in zip(layers, maps)
                }
            out.append(item)
        return out

    async def feature_map_png(self, name: str, version: int | None, layer: str, image: bytes) -> tuple[bytes, dict[str, Any]]:
        """One layer's feature-map grid for one image, as PNG bytes."""
        entry = self.entry(name, version)
        model = entry.runtime
        assert model is not None
        self.layer(model, layer)
        prepared = await self.prepare(model, [image])
        result = await self.run(entry, prepared.tensor, (layer,))
        grid, info = await asyncio.get_running_loop().run_in_executor(
            self._pool, enc.feature_map_grid, result.outputs[0][0]
        )
        return enc.png_bytes(grid), info

    def filters_png(self, name: str, version: int | None, layer: str, state: str = "trained") -> tuple[bytes, dict[str, Any]]:
        """A conv layer's kernels as a picture: as trained, or as initialised before training."""
        model = self.model(name, version)
        self.layer(model, layer)
        with_filters = [n for n in model.layer_names if n in model.filters]
        if layer not in model.filters:
            raise NotFound(
                f"layer {layer!r} of model {model.name} has no filters of its own (it is not a conv "
                f"layer); layers with filters: {', '.join(with_filters) or '(none)'}"
            )
        if state == "initial":
            initial = model.initial_filters
            if layer not in initial:
                raise NotFound(
                    f"model {model.name} version {model.version} has no record of its filters before "
                    "training (exported without initial_weights.npz); use state=trained"
                )
            weights = initial[layer]
        else:
            weights = model.filters[layer]
        grid, info = enc.filters_grid(weights)
        return enc.png_bytes(grid), info
