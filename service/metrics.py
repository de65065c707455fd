"""Prometheus metrics, named after the ones people already scrape from Triton
(``nv_inference_*``): request counts and latency, queue and compute time, batch sizes,
queue depth, models loaded. Each app owns its registry, so two apps in one process (tests)
never share counters.

With several uvicorn workers (``CONVSCOPE_WORKERS``), ``python -m service`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start; each worker then writes its values
there and ``/metrics``, whichever worker answers it, reports the sum over all of them."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from enum import StrEnum

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
# An explanation makes 1 to CONVSCOPE_MAX_EXPLAIN_PASSES forward passes (default costs:
# 59 for grad-cam with faithfulness, 228 occlusion, 1059 RISE) and takes milliseconds
# (TinyVGG) to tens of seconds (RISE on AlexNet under load).
PASS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
EXPLAIN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ExplainOutcome(StrEnum):
    """How an explanation ended, for ``convscope_explanations``."""

    OK = "ok"
    REJECTED = "rejected"  # the request's fault (4xx): unknown method, layer or target, bad image...
    FAILED = "failed"  # the server's or the model's fault (5xx)
    CANCELLED = "cancelled"  # the client went away: the remaining passes were dropped


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "convscope_requests", "HTTP requests answered, by model, version, endpoint and status.",
            ["model", "version", "endpoint", "status"], registry=r,
        )
        self.request_latency = Histogram(
            "convscope_request_duration_seconds", "Time from request to response, by endpoint.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inference_count = Counter(
            "convscope_inference_count", "Images inferred (like nv_inference_count).",
            ["model", "version"], registry=r,
        )
        self.exec_count = Counter(
            "convscope_inference_exec_count", "onnxruntime runs; inference_count / exec_count is the "
            "mean batch size (like nv_inference_exec_count).", ["model", "version"], registry=r,
        )
        self.queue_seconds = Histogram(
            "convscope_inference_queue_duration_seconds", "Time a request waited in the batcher's queue.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute_seconds = Histogram(
            "convscope_inference_compute_duration_seconds", "Time of one onnxruntime run (a whole batch).",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "convscope_inference_batch_size", "Images per onnxruntime run.",
            ["model", "version"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "convscope_inference_queue_depth", "Images waiting in the batcher's queue.",
            ["model", "version"], registry=r, multiprocess_mode="livesum",
        )
        # Every worker loads every model: across workers the count is the max, not the sum.
        self.models_loaded = Gauge(
            "convscope_models_loaded", "Model versions ready to serve.", registry=r, multiprocess_mode="max",
        )
        self.http_refused = Counter(
            "convscope_http_refused", "Connections the HTTP server answered and closed itself, before any "
            "request reached the app, by reason (service/http_limits.py).", ["reason"], registry=r,
        )
        self.http_connections = Gauge(
            "convscope_http_connections", "Open client connections (CONVSCOPE_MAX_CONNECTIONS is per worker).",
            registry=r, multiprocess_mode="livesum",
        )
        # The decode budget (CONVSCOPE_DECODE_BUDGET_BYTES is per worker, as these are).
        self.decode_in_flight = Gauge(
            "convscope_decode_bytes_in_flight", "Bytes of decoding memory reserved by requests being decoded "
            "(CONVSCOPE_DECODE_BUDGET_BYTES bounds it per worker).", registry=r, multiprocess_mode="livesum",
        )
        self.decode_waits = Counter(
            "convscope_decode_budget_waits", "Requests that did not fit the decode budget at once, by outcome: "
            "granted (within CONVSCOPE_DECODE_BUDGET_WAIT_S), refused (503), gone (the client left while it "
            "waited).", ["outcome"], registry=r,
        )
        self.models_failed = Gauge(
            "convscope_models_failed", "Model versions that failed to load.", registry=r,
            multiprocess_mode="max",
        )
        self.model_loads = Counter(
            "convscope_model_loads", "Model version loads (at start, by the poll or on request), by outcome: "
            "success or failure.", ["model", "outcome"], registry=r,
        )
        self.model_load_seconds = Histogram(
            "convscope_model_load_duration_seconds", "Time to validate, open and warm up one model version.",
            ["model"], buckets=LOAD_BUCKETS, registry=r,
        )
        self.model_unloads = Counter(
            "convscope_model_unloads", "Model versions unloaded (gone from disk, or on request).", ["model"],
            registry=r,
        )

        # Explanations (issue 12). ``method`` is always one of the engine's method names,
        # or "unknown" for a request that named none of them.
        self.explanations = Counter(
            "convscope_explanations", "Explanations, by model, version, method and outcome: ok, rejected "
            "(the request's fault), failed (the server's), cancelled (the client went away).",
            ["model", "version", "method", "outcome"], registry=r,
        )
        self.explanation_passes = Histogram(
            "convscope_explanation_forward_passes", "Forward passes one explanation made (the image, the "
            "method's, faithfulness's), for explanations answered.", ["model", "version", "method"],
            buckets=PASS_BUCKETS, registry=r,
        )
        self.explanation_seconds = Histogram(
            "convscope_explanation_duration_seconds", "Time to explain one image, from decoding to the map and "
            "its scores, for explanations answered.", ["model", "version", "method"],
            buckets=EXPLAIN_BUCKETS, registry=r,
        )

    def explained(self, model: str, version: int, method: str, outcome: ExplainOutcome,
                  passes: int | None = None, seconds: float | None = None) -> None:
        """Count one explanation; ``passes`` and ``seconds`` for one that was answered."""
        labels = (model, str(version), method)
        self.explanations.labels(*labels, outcome.value).inc()
        if passes is not None:
            self.explanation_passes.labels(*labels).observe(passes)
        if seconds is not None:
            self.explanation_seconds.labels(*labels).observe(seconds)

    def forget(self, model: str, version: int) -> None:
        """Drop an unloaded version's queue depth, so no stale value lingers (its counters
        stay: they are totals)."""
        labels = (model, str(version))
        try:
            self.queue_depth.labels(*labels).set(0)  # multiprocess files keep the last value
            self.queue_depth.remove(*labels)
        except KeyError:
            pass

    def count_refusal(self, reason: str) -> None:
        self.http_refused.labels(reason).inc()

    def open_connections(self, count: int) -> None:
        self.http_connections.set(count)

    def observer(self, model: str, version: int) -> BatchMetrics:
        return BatchMetrics(self, model, str(version))

    def render(self) -> bytes:
        if self.multiprocess:
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


class BatchMetrics:
    """The batcher's view of the metrics, bound to one model version."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        labels = {"model": model, "version": version}
        self._inference = metrics.inference_count.labels(**labels)
        self._exec = metrics.exec_count.labels(**labels)
        self._queue = metrics.queue_seconds.labels(**labels)
        self._compute = metrics.compute_seconds.labels(**labels)
        self._batch = metrics.batch_size.labels(**labels)
        self._depth = metrics.queue_depth.labels(**labels)

    def batch_done(self, batch_size: int, queue_seconds: list[float], compute_seconds: float) -> None:
        self._inference.inc(batch_size)
        self._exec.inc()
        self._batch.observe(batch_size)
        self._compute.observe(compute_seconds)
        for waited in queue_seconds:
            self._queue.observe(waited)

    def queue_depth(self, images: int) -> None:
        self._depth.set(images)


UNKNOWN = "unknown"


def model_labels(served: Mapping[str, Collection[int]], name: object, version: object) -> tuple[str, str]:
    """The model and version labels of a request: its model and version as the repository
    has them, "unknown" for anything else, "" where it named none. Never the client's own
    words: a label per unknown name would grow the metrics without end."""
    if not isinstance(name, str) or name not in served:
        return (UNKNOWN if name else ""), (UNKNOWN if version else "")
    if version is None or version == "":
        return name, ""
    return name, (str(version) if isinstance(version, int) and version in served[name] else UNKNOWN)
