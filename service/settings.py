"""The service's one settings object: every knob, its environment name and its meaning.

Every field is read from the environment with the prefix ``CONVSCOPE_`` (for example
``CONVSCOPE_MODEL_REPOSITORY``), validated once at start, and never read again from the
environment afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Configuration of one convscope server process."""

    model_config = SettingsConfigDict(env_prefix="CONVSCOPE_", extra="ignore", frozen=True)

    model_repository: Path = Path("models")
    """Directory laid out as ``<name>/<version>/`` by the export stage; every model in it is served."""

    host: str = "127.0.0.1"
    """Interface to listen on (``0.0.0.0`` to accept connections from other hosts)."""

    port: int = Field(8000, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""

    workers: int = Field(1, ge=1, le=64)
    """Worker processes, each with its own SO_REUSEPORT socket so the kernel spreads
    connections evenly; each loads every model (memory grows with this). Small models
    (TinyVGG) are bound by per-request Python: one worker per core with
    ``intra_op_threads=1`` (2 cores: 1.7x one worker). Large ones (AlexNet) gain from
    batching: one worker, threads = cores (benchmarks/README.md)."""

    log_level: LogLevel = "info"
    """Log level of the service and of uvicorn."""

    default_model: str | None = None
    """Model answered by ``POST /predict``; may be left unset when the repository holds one model."""

    providers: Annotated[list[str] | None, NoDecode] = None
    """onnxruntime execution providers in order of preference, comma separated
    (e.g. ``CUDAExecutionProvider,CPUExecutionProvider``). Unset: CUDA when this onnxruntime
    build offers it, else CPU."""

    intra_op_threads: int = Field(0, ge=0, le=256)
    """Threads onnxruntime uses inside one operator (0: one per physical core). With
    several workers keep workers x threads <= physical cores."""

    inter_op_threads: int = Field(0, ge=0, le=256)
    """Threads onnxruntime uses across independent operators (0: onnxruntime's default)."""

    ort_allow_spinning: bool = False
    """Let onnxruntime's idle threads spin for work instead of sleeping. Off: a spinning
    pool burns the cores that decoding and HTTP need between runs (measured in
    benchmarks/RESULTS.md); on a dedicated many-core box it can shave tens of microseconds."""

    max_batch_size: int = Field(32, ge=1, le=1024)
    """Most images the dynamic batcher puts into one onnxruntime run."""

    max_queue_delay_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long the batcher waits for more requests once it has one. 0: it takes what is
    already queued (batches still form under load, while the model is busy) and adds no
    latency at low load."""

    batch_arrival_wait_ms: float = Field(15.0, ge=0.0, le=1000.0)
    """How long a batch may wait for requests on their way: ones this model has accepted and
    is still decoding, and, while fewer are queued than the last run answered, clients
    coming straight back (never longer than half the last run). A lone client never waits;
    under load batches fill (AlexNet at 16 clients: batches of 8 -> 16, benchmarks/)."""

    max_queue_size: int = Field(256, ge=1, le=100_000)
    """Most images waiting per model; past it requests get 503 with Retry-After at once."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted (413 beyond it)."""

    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest decoded image (width x height) accepted: guards against decompression bombs."""

    max_images_per_request: int = Field(64, ge=1)
    """Most images one request may carry."""

    max_feature_map_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Budget for the encoded feature maps in one response (413 beyond it, naming the budget)."""

    preprocess_threads: int = Field(4, ge=1, le=256)
    """Threads that decode and preprocess images off the event loop."""

    model_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per-model batcher settings as JSON, e.g.
    ``{"digits-tinyvgg": {"max_batch_size": 8, "max_queue_delay_ms": 2}}``."""

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            items = [p.strip() for p in value.split(",") if p.strip()]
            return items or None
        return value

    @model_validator(mode="after")
    def _check_overrides(self) -> Settings:
        allowed = {"max_batch_size", "max_queue_delay_ms", "max_queue_size", "batch_arrival_wait_ms"}
        for model, values in self.model_overrides.items():
            unknown = set(values) - allowed
            if unknown:
                raise ValueError(
                    f"model_overrides[{model!r}] has unknown keys {sorted(unknown)}; "
                    f"allowed: {sorted(allowed)}"
                )
        return self

    def batching_for(self, model: str) -> tuple[int, float, int, float]:
        """(max_batch_size, max_queue_delay_ms, max_queue_size, batch_arrival_wait_ms) for one model."""
        override = self.model_overrides.get(model, {})
        return (
            int(override.get("max_batch_size", self.max_batch_size)),
            float(override.get("max_queue_delay_ms", self.max_queue_delay_ms)),
            int(override.get("max_queue_size", self.max_queue_size)),
            float(override.get("batch_arrival_wait_ms", self.batch_arrival_wait_ms)),
        )

    full_resolution_decode: bool = False
    """Decode and resize every image at full resolution, exactly as the export stage's
    reference pipeline does. Off (the default): a photo much larger than the model's input
    is decoded at reduced scale (JPEG DCT scaling) and shrunk in integer steps before the
    final resize; a 12 MP JPEG costs a fraction of the time, and predictions agree with
    the exact path (top-1 and probabilities measured in benchmarks/README.md)."""
