"""The service's one settings object: every knob, its environment name and its meaning.

Every field is read from the environment with the prefix ``CONVSCOPE_`` (for example
``CONVSCOPE_MODEL_REPOSITORY``) or from the matching ``python -m service`` flag
(``--model-repository``), validated once at start, and never read again afterwards. Each
field's docstring is its documentation: ``python -m service --help`` prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# A number of bytes: a plain integer, or with a unit ("8 MiB", "512KiB", "1GB").
Bytes = Annotated[ByteSize, Field(ge=1024)]


class BatchingOverride(BaseModel):
    """Per-model batcher settings; each left out keeps the server-wide value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(None, ge=1, le=1024)
    max_queue_delay_ms: float | None = Field(None, ge=0.0, le=1000.0)
    max_queue_size: int | None = Field(None, ge=1, le=100_000)
    batch_arrival_wait_ms: float | None = Field(None, ge=0.0, le=1000.0)


class Settings(BaseSettings):
    """Configuration of one convscope server process."""

    model_config = SettingsConfigDict(
        env_prefix="CONVSCOPE_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

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
    """Log level of the service and of uvicorn (any case: ``INFO`` and ``info`` alike)."""

    default_model: str | None = None
    """Model answered by ``POST /predict``; may be left unset when the repository holds one
    model. Checked against the repository at start."""

    default_precision: Literal["auto", "newest", "float32", "int8"] = "auto"
    """Which ready version of a model answers requests that name none (``/v1/models/{name}/...``,
    ``/predict``) when the model has float32 and int8 versions (``python -m model_export
    quantize``). ``auto``: the newest, unless it is an int8 version that runs slower on
    this server than its float version (both timed at load; an int8 graph runs slower on
    CUDA, and for small models such as TinyVGG); ``newest``: the newest, whatever its
    precision; ``float32`` / ``int8``: the newest of that precision (the newest of any
    when none is ready). Every version stays addressable as ``/versions/{v}``."""

    providers: Annotated[list[str] | None, NoDecode] = None
    """onnxruntime execution providers in order of preference, comma separated
    (e.g. ``CUDAExecutionProvider,CPUExecutionProvider``). Unset: CUDA when this onnxruntime
    build offers it, else CPU."""

    intra_op_threads: int = Field(0, ge=0, le=256)
    """Threads onnxruntime uses inside one operator (0: one per physical core). With
    several workers keep workers x threads <= physical cores."""

    inter_op_threads: int = Field(0, ge=0, le=256)
    """Threads onnxruntime uses across independent operators (0: onnxruntime's default)."""

    ort_allow_spinning: bool = True
    """Let onnxruntime's threads spin between the parallel sections of a run instead of
    sleeping and being woken for each; they stop as soon as the run returns
    (``session.force_spinning_stop``), so decoding and HTTP have the cores between runs.
    On: interleaved A/Bs on the 2-core machine (benchmarks/RESULTS.md) gave 1.18x the
    images/s for the 28 px TinyVGG at 16 clients and 1.23x at one, 1.08x for AlexNet at 224
    at both, with less CPU per image. Off: for a box whose other processes need every core
    during runs."""

    max_batch_size: int = Field(32, ge=1, le=1024)
    """Most images the dynamic batcher puts into one onnxruntime run."""

    max_queue_delay_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long the batcher waits for more requests once it has one. 0: it takes what is
    already queued (batches still form under load, while the model is busy) and adds no
    latency at low load."""

    batch_arrival_wait_ms: float = Field(15.0, ge=0.0, le=1000.0)
    """How long a batch may wait for requests on their way: ones this model has accepted and
    is still decoding and, for a model whose runs have a large fixed cost (the batcher's
    *hold* policy, chosen at load from timed runs: AlexNet, not TinyVGG), the clients the
    last run answered and the requests that queued during it (never longer than half the
    last run). A lone client never waits; under load batches fill (AlexNet at 16 clients:
    batches of 8 -> 16, benchmarks/peers/FINDINGS.md)."""

    max_queue_size: int = Field(256, ge=1, le=100_000)
    """Most images waiting per model; past it requests get 503 with Retry-After at once."""

    max_body_bytes: Bytes = ByteSize(8 * 1024 * 1024)
    """Largest request body accepted (413 beyond it). Bytes, or with a unit: ``8MiB``."""

    max_image_pixels: int = Field(40_000_000, ge=1)
    """Largest decoded image (width x height) accepted: guards against decompression bombs."""

    max_images_per_request: int = Field(64, ge=1)
    """Most images one request may carry."""

    max_feature_map_bytes: Bytes = ByteSize(32 * 1024 * 1024)
    """Budget for the encoded feature maps in one response (413 beyond it, naming the budget).
    Bytes, or with a unit: ``32MiB``."""

    preprocess_threads: int = Field(4, ge=1, le=256)
    """Threads that decode and preprocess images off the event loop."""

    decode_budget_bytes: Bytes = ByteSize(512 * 1024 * 1024)
    """Memory that decoding images may take at once, over every request of a worker process:
    each request reserves what its images need decoded and converted (counted from their
    headers, before any pixel is decoded), waits for it up to decode_budget_wait_s when the
    rest of the budget is too small, then gets 503 with Retry-After. Bytes, or with a unit:
    ``512MiB``."""

    decode_budget_wait_s: float = Field(5.0, ge=0.0, le=600.0)
    """Longest a request waits for its share of the decode budget before its 503 (0: none).
    Waiters are served first come first served; a request that fits goes at once."""

    max_request_decode_bytes: Bytes = ByteSize(256 * 1024 * 1024)
    """Memory the images of one request may need decoded and converted (a 16-bit PNG needs
    about 10 bytes a pixel, an RGB JPEG 5); 413 beyond it. At most the decode budget.
    Bytes, or with a unit: ``256MiB``."""

    max_connections: int = Field(1000, ge=1, le=1_000_000)
    """Open client connections per worker process. At the cap, the connection idle the
    longest (between requests, or connected and silent) is closed to make room; when none is
    idle, a new one gets 503 at once. Kept under the process's open-file limit, which the
    service raises to its hard limit at start (less 256 files for its own use)."""

    max_header_bytes: Bytes = ByteSize(32 * 1024)
    """Largest request line plus headers. Counted as they arrive: past it the client gets 414
    (still in the URL) or 431 and the connection is closed, before the rest is read.
    Bytes, or with a unit: ``32KiB``."""

    header_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    """Time a client has to send a whole request line and headers, from the moment it
    connects or sends the first byte of its next request; a trickle of bytes does not extend
    it. Past it: 408 and the connection closed (closed silently when nothing came)."""

    body_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    """Longest wait for the next piece of a request body (not the whole upload); past it,
    408 and the connection closed."""

    keep_alive_timeout_s: int = Field(5, ge=1, le=3600)
    """How long a connection may stay idle after a response before the server closes it."""

    model_overrides: dict[str, BatchingOverride] = Field(default_factory=dict)
    """Per-model batcher settings as JSON, e.g.
    ``{"digits-tinyvgg": {"max_batch_size": 8, "max_queue_delay_ms": 2}}``; keys:
    max_batch_size, max_queue_delay_ms, max_queue_size, batch_arrival_wait_ms."""

    repository_poll_seconds: float = Field(0.0, ge=0.0, le=86_400.0)
    """How often to compare the model repository on disk with what is served (0: never; the
    repository is then read at start and by ``POST /v2/repository/models/{name}/load``). A new
    version is loaded and warmed up, then becomes its model's default in one step; a version
    or model removed from disk is unloaded once its requests have finished; a version that
    fails to load is listed as failed and the previous default keeps serving."""

    api_keys_file: Path | None = None
    """File of API keys, one ``<key>:<scope>`` a line (scope ``infer`` or ``admin``; ``#``
    starts a comment). With any key configured, every route but the probes, ``/metrics``
    (see CONVSCOPE_METRICS_REQUIRE_KEY), the explorer page and the API docs needs
    ``Authorization: Bearer <key>``; with none, inference is open and the repository
    control calls are disabled. Read at start."""

    api_keys: SecretStr | None = None
    """API keys in the form of ``CONVSCOPE_API_KEYS_FILE``, comma separated
    (``<key>:infer,<key>:admin``); adds to the file's. Prefer the file: a flag's value shows
    in the process list."""

    metrics_require_key: bool = False
    """Make ``GET /metrics`` need an API key (of either scope). Off: open, like the probes."""

    drain_seconds: float = Field(20.0, ge=0.0, le=3600.0)
    """On SIGTERM: readiness answers 503 at once, requests in flight and queued are answered,
    new ones get 503 with Retry-After, and the process exits 0 once none is left or after at
    most this many seconds."""

    @model_validator(mode="after")
    def _metrics_key_needs_keys(self) -> Settings:
        if self.metrics_require_key and self.api_keys_file is None and self.api_keys is None:
            raise ValueError(
                "CONVSCOPE_METRICS_REQUIRE_KEY needs API keys: set CONVSCOPE_API_KEYS_FILE or CONVSCOPE_API_KEYS"
            )
        return self

    @model_validator(mode="after")
    def _request_within_budget(self) -> Settings:
        if self.max_request_decode_bytes > self.decode_budget_bytes:
            raise ValueError(
                f"max_request_decode_bytes ({self.max_request_decode_bytes}) is over decode_budget_bytes "
                f"({self.decode_budget_bytes}): such a request could never be decoded"
            )
        return self

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            items = [p.strip() for p in value.split(",") if p.strip()]
            return items or None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    model_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Name to serve the model under when ``model_repository`` is a single model rather than
    a repository of ``<name>/<version>/``: a directory of version directories (``1/``,
    ``2/``) or one version's own directory (``metadata.json`` and ``model.onnx`` at its
    root), as KServe's storage initializer lays a model out in ``/mnt/models`` (the
    ServingRuntime passes the InferenceService's name). Unset: the ``name`` in the newest
    version's metadata.json, else the directory's own name. A repository's models keep
    their directory names."""

    max_explain_passes: int = Field(2000, ge=1, le=1_000_000)
    """Most forward passes one explanation may make, faithfulness included; a request's
    ``passes`` above it is refused (422, naming this limit). The default fits the costliest
    default (RISE: 1 + 1000 masks + 58 faithfulness passes) with room for a finer map."""

    full_resolution_decode: bool = False
    """Decode and resize every image at full resolution, exactly as the export stage's
    reference pipeline does. Off (the default): a photo much larger than the model's input
    is decoded at reduced scale (JPEG DCT scaling) and shrunk in integer steps before the
    final resize; a 12 MP JPEG costs a fraction of the time, and predictions agree with
    the exact path (top-1 and probabilities measured in benchmarks/README.md)."""
