"""The settings, read once, as one options object per subsystem.

``Settings`` (settings.py) is what an operator writes: environment variables and flags.
``ServiceOptions.from_settings`` is the only code that reads it; every subsystem gets its
own small, frozen options object and never sees the rest. A bad value that can only be
judged here (an execution provider this onnxruntime lacks, API keys that cannot be used)
is a ValueError saying so, before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.explain import ExplainOptions
from service.http.auth import AccessPolicy, KeyRing
from service.http.limits import HttpLimits
from service.inference.batching import BatchingOptions, BatchingPolicy
from service.inference.image_preparation import PreparationOptions
from service.inference.limits import RequestLimits
from service.models.repository import DefaultPrecision, RepositoryOptions
from service.models.runtime import RuntimeOptions, choose_providers
from service.settings import BatchingOverride, LogLevel, Settings


@dataclass(frozen=True)
class ServerOptions:
    """The process or processes serving HTTP."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: LogLevel = "info"
    drain_seconds: float = 20.0


@dataclass(frozen=True)
class ServiceOptions:
    server: ServerOptions
    http: HttpLimits
    access: AccessPolicy
    repository: RepositoryOptions
    runtime: RuntimeOptions
    preparation: PreparationOptions
    batching: BatchingPolicy
    limits: RequestLimits
    explanations: ExplainOptions

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceOptions:
        return cls(
            server=ServerOptions(host=settings.host, port=settings.port, workers=settings.workers,
                                 log_level=settings.log_level, drain_seconds=settings.drain_seconds),
            http=HttpLimits(
                max_connections=settings.max_connections,
                max_header_bytes=int(settings.max_header_bytes),
                header_timeout_s=settings.header_timeout_s,
                body_timeout_s=settings.body_timeout_s,
                keep_alive_timeout_s=settings.keep_alive_timeout_s,
            ),
            access=AccessPolicy(
                KeyRing.load(settings.api_keys_file,
                             settings.api_keys.get_secret_value() if settings.api_keys is not None else None),
                settings.metrics_require_key,
            ),
            repository=RepositoryOptions(root=settings.model_repository, model_name=settings.model_name,
                                         poll_seconds=settings.repository_poll_seconds,
                                         default_model=settings.default_model,
                                         default_precision=DefaultPrecision(settings.default_precision)),
            runtime=RuntimeOptions(
                providers=choose_providers(settings.providers),
                intra_op_threads=settings.intra_op_threads,
                inter_op_threads=settings.inter_op_threads,
                allow_spinning=settings.ort_allow_spinning,
            ),
            preparation=PreparationOptions(
                threads=settings.preprocess_threads,
                max_pixels=settings.max_image_pixels,
                budget_bytes=int(settings.decode_budget_bytes),
                budget_wait_s=settings.decode_budget_wait_s,
                max_request_bytes=int(settings.max_request_decode_bytes),
                full_resolution=settings.full_resolution_decode,
            ),
            batching=_batching(settings),
            limits=RequestLimits(
                max_body_bytes=int(settings.max_body_bytes),
                max_images=settings.max_images_per_request,
                max_feature_map_bytes=int(settings.max_feature_map_bytes),
            ),
            explanations=ExplainOptions(max_passes=settings.max_explain_passes),
        )


def _batching(settings: Settings) -> BatchingPolicy:
    """The server-wide batcher options, and each overridden model's, resolved here."""
    default = BatchingOptions(
        max_batch_size=settings.max_batch_size,
        max_queue_delay_ms=settings.max_queue_delay_ms,
        max_queue_size=settings.max_queue_size,
        arrival_wait_ms=settings.batch_arrival_wait_ms,
    )
    return BatchingPolicy(default, {name: _overridden(default, override)
                                    for name, override in settings.model_overrides.items()})


def _overridden(default: BatchingOptions, override: BatchingOverride) -> BatchingOptions:
    return BatchingOptions(
        max_batch_size=override.max_batch_size or default.max_batch_size,
        max_queue_delay_ms=(default.max_queue_delay_ms if override.max_queue_delay_ms is None
                            else override.max_queue_delay_ms),
        max_queue_size=override.max_queue_size or default.max_queue_size,
        arrival_wait_ms=(default.arrival_wait_ms if override.batch_arrival_wait_ms is None
                         else override.batch_arrival_wait_ms),
    )
