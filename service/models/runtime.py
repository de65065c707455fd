"""onnxruntime sessions for one artifact.

Each model gets two sessions over the same weights:

- a *logits-only* session, built from the graph with every output but the class output
  removed. onnxruntime will not fuse a Conv with its activation when the Conv's output is
  a graph output, and a session with many outputs stays slower even when asked for one,
  so predictions without feature maps take this path and run at full speed;
- a *features* session over the full graph, for requests that ask for feature maps.

Memory (issue 14): the dense layers' weights are most of a classifier's bytes (AlexNet:
218 of 228 MB). Where the file holds them aligned (every export since 2026-12-03,
docs/artifact.md), the features session and the explanation heads read them in place
through a memory map (``MappedWeights``: resident once read, clean page cache) and the
logits session keeps its own copy, which onnxruntime prepacks (AlexNet's float predictions
ran 24% faster at batch 1 and 5% at batch 16 so). In a file written otherwise, both sessions
share one copy: read once into numpy arrays and handed to both as pre-allocated initializers
(``SessionOptions.add_initializer``), the graphs carrying only a reference to them; such
weights must not be repacked per session, so prepacking is off for those sessions
(measured in benchmarks/README.md). Only a Gemm/MatMul's weight input
is shared with the logits session, where no optimizer reads it: that session keeps its
conv weights in its graph, because the CPU provider's layout optimizer (ORT_ENABLE_ALL)
rewrites them into its blocked layout and would read a placeholder, not the shared array.
The features session is built without layout optimizations (ORT_ENABLE_EXTENDED: the
same speed for AlexNet's every-output runs, measured) and shares the conv weights too;
the same arrays are the trained filters the API draws. Because a wrongly shared weight
would give silently wrong maps, the two sessions must give the same class scores for a
random image at load, or the features session is rebuilt with its conv weights in its
graph. The parsed protobuf is dropped once the sessions exist; trained filters are read
once here, initial ones on their first view (``InitialFilters``), never per request.

An int8 version (docs/artifact.md, "int8 versions") is a QDQ graph: its kernels are int8
initializers read by DequantizeLinear nodes. Sharing looks through those nodes (an int8
weight whose DequantizeLinear feeds a Gemm/MatMul is a dense weight), and the filters the
API draws are those kernels dequantized on demand (``Kernels``), never a float32 copy kept.
The logits session keeps its own int8 dense weights (prepacked for its fused kernels) in
any file, and what the features session, the filters and the explanation heads share is
read in place (one-byte weights need no alignment). The logits-only session matters even
more there: onnxruntime fuses a DequantizeLinear -> Conv -> QuantizeLinear chain into one integer
kernel only where no graph output reads the float values in between, so the features
session runs the pairs as they are (about float speed) while predictions run in int8.

Explanations (service/explain/) need to know the graph after each tapped layer to replay
it in numpy (grad-cam, hires-cam): that analysis runs here, on the graph already parsed,
and its heads hold the very arrays the sessions share (``shared_weights``), not a copy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from artifact import Layer, Metadata, Precision
from service.errors import NoFilters, UnknownLayer
from service.explain import ExplainableModel, describe
from service.inference.batching import BatchCosts
from service.inference.preprocessing import REDUCING_GAP, InputSpec
from service.models.initial_filters import InitialFilters
from service.models.mapped_weights import MappedWeights
from service.models.repository import Artifact
from service.models.signature import ModelSignature

log = logging.getLogger("convscope.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Initializers at least this large, read only as a Gemm/MatMul weight, are shared by the
# two sessions; smaller ones are not worth a placeholder.
SHARE_MIN_BYTES = 1 << 20
# Batch sizes a predictions run is timed at, at load (BatchCosts: the batcher's policy), and
# how many timed runs of each (after one untimed): ~0.5 s for AlexNet on 2 cores.
COST_BATCHES = (1, 8)
COST_RUNS = 3
# Where the shared weights' placeholders point (a sparse file: the sessions check that it
# exists, never read it, since add_initializer supplies the values).
_PLACEHOLDER = "convscope-shared-weights.bin"


def choose_providers(requested: list[str] | None) -> list[str]:
    """The execution providers to ask for: the setting, else CUDA when present, else CPU."""
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ValueError(
                f"execution provider(s) {', '.join(unknown)} are not in this onnxruntime "
                f"build; available: {', '.join(available)}"
            )
        return list(requested)
    return [CUDA, CPU] if CUDA in available else [CPU]


@dataclass(frozen=True)
class RuntimeOptions:
    """How onnxruntime runs every model of this process."""

    providers: list[str]
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = True
    # onnxruntime's CPU arena keeps the largest batch's buffers (rounded up to powers of
    # two) for the life of the session: every feature map of a batch of 32 AlexNet images
    # is ~110 MB. Without it, freed buffers go back to the system (benchmarks/README.md).
    cpu_mem_arena: bool = False
    share_weights: bool = True

    @property
    def cpu_only(self) -> bool:
        return self.providers == [CPU]

    def session_options(self, shared: dict[str, ort.OrtValue] | None = None,
                        placeholder_dir: Path | None = None, *, layout: bool = True,
                        prepack: bool = False) -> ort.SessionOptions:
        """``layout``: the CPU provider's layout optimizations (ORT_ENABLE_ALL), which read
        conv weights' values and so must not meet a shared (placeholder) one. ``prepack``:
        the session packs ``shared`` into its own copies (weights read in place, which no
        other session reads from this copy's memory)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if layout else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        )
        # Allowed, threads spin between a run's parallel sections instead of being woken for
        # each, and stop as soon as the run returns, where decoding and HTTP need the cores
        # (settings.ort_allow_spinning: measured faster for TinyVGG and AlexNet).
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if self.allow_spinning:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads:
            options.inter_op_num_threads = self.inter_op_threads
        options.log_severity_level = 3  # onnxruntime's warnings go to stderr, not our logs
        options.enable_cpu_mem_arena = self.cpu_mem_arena
        if shared:
            if not prepack:  # it would give each session its own repacked copy of the shared weights
                options.add_session_config_entry("session.disable_prepacking", "1")
            options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                             str(placeholder_dir))
            for name, value in shared.items():
                options.add_initializer(name, value)
        return options


@dataclass(frozen=True)
class QuantizedKernel:
    """An int8 kernel and what dequantizes it: (q - zero_point) * scale, per ``axis``."""

    values: np.ndarray  # int8 [O, I, kh, kw]
    scale: np.ndarray  # float32, one per index of ``axis`` (or one)
    zero_point: np.ndarray
    axis: int = 0

    def dequantized(self) -> np.ndarray:
        shape = [1] * self.values.ndim
        shape[self.axis] = -1
        scale = self.scale.reshape(shape) if self.scale.size > 1 else self.scale.reshape(())
        zero = self.zero_point.reshape(shape) if self.zero_point.size > 1 else self.zero_point.reshape(())
        out: np.ndarray = ((self.values.astype(np.int32) - zero.astype(np.int32)).astype(np.float32)
                           * scale.astype(np.float32))
        return out


class Kernels(Mapping[str, np.ndarray]):
    """Conv kernels by layer name: float32 arrays as they are, int8 ones dequantized on each
    read (a layer's kernels at a time: no float32 copy of an int8 model's weights is kept)."""

    def __init__(self, kernels: Mapping[str, np.ndarray | QuantizedKernel] | None = None) -> None:
        self._kernels = dict(kernels or {})

    def __getitem__(self, layer: str) -> np.ndarray:
        kernel = self._kernels[layer]
        return kernel.dequantized() if isinstance(kernel, QuantizedKernel) else kernel

    def __iter__(self) -> Iterator[str]:
        return iter(self._kernels)

    def __len__(self) -> int:
        return len(self._kernels)


@dataclass
class ModelRuntime:
    """A loaded artifact: its sessions, its input recipe and its layers."""

    artifact: Artifact
    spec: InputSpec
    logits_session: ort.InferenceSession
    features_session: ort.InferenceSession
    provider: str
    input_name: str
    output_name: str
    layer_names: list[str]
    filters: Mapping[str, np.ndarray] = field(default_factory=Kernels)
    """Conv kernels as trained, by layer name (an int8 version's: dequantized)."""
    initial_filters: Mapping[str, np.ndarray] = field(default_factory=InitialFilters)
    """Conv kernels before training (initial_weights.npz), by layer name, each read on first
    view; empty without the file."""
    shared_weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """The dense weights both sessions read (kept alive here: the sessions do not own them)."""
    mapped: MappedWeights | None = field(default=None, repr=False)
    """The version's file, where shared weights are read in place from it (int8 ones, and
    aligned float ones); every read through it first checks the file is unchanged."""
    explainable: ExplainableModel | None = field(default=None, repr=False)
    """What the explanation engine knows of this graph; None when it could not be analysed."""
    explain_unavailable: str | None = None
    """Why ``explainable`` is None."""
    batch_costs: BatchCosts | None = None
    """Seconds of a predictions run at a few batch sizes, timed at load."""
    load_seconds: float = 0.0

    @cached_property
    def signature(self) -> ModelSignature:
        return ModelSignature.from_metadata(self.artifact.name, self.artifact.version, self.metadata)

    @property
    def metadata(self) -> Metadata:
        return self.artifact.metadata

    @property
    def precision(self) -> Precision:
        return self.metadata.precision

    def trained_filters(self, layer: str) -> np.ndarray:
        """The kernels of ``layer`` as trained; 404s name the valid layers, or those with filters."""
        if layer not in self.layer_names:
            raise UnknownLayer(self.artifact.name, layer, self.layer_names)
        if layer not in self.filters:
            raise NoFilters(self.artifact.name, layer, [n for n in self.layer_names if n in self.filters])
        if self.mapped is not None:
            self.mapped.check()
        return self.filters[layer]

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        """Run one batch; ``outputs`` names what to return, in that order.

        Only the class output: the fused logits-only session. Anything else: the
        features session. Called from a worker thread, never the event loop.
        """
        session = self.logits_session if outputs == (self.output_name,) else self.features_session
        if session is self.features_session and self.mapped is not None:
            self.mapped.check()
        fixed = self.metadata.input.fixed_batch
        if fixed is None or batch.shape[0] == fixed:
            results: list[np.ndarray] = session.run(list(outputs), {self.input_name: batch})
            return results
        return self._run_fixed(session, batch, outputs, fixed)

    def _run_fixed(self, session: ort.InferenceSession, batch: np.ndarray, outputs: tuple[str, ...],
                   fixed: int) -> list[np.ndarray]:
        """A graph that takes exactly ``fixed`` images a run (its batch could not be made
        dynamic at import): the batch in runs of that size, the last one padded with zeros,
        the padding's rows dropped from what comes back."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, batch.shape[0], fixed):
            chunk = batch[start:start + fixed]
            rows = chunk.shape[0]
            if rows < fixed:
                chunk = np.concatenate([chunk, np.zeros((fixed - rows, *chunk.shape[1:]), chunk.dtype)])
            parts.append([value[:rows] for value in session.run(list(outputs), {self.input_name: chunk})])
        return [np.concatenate(values) for values in zip(*parts)]


def load_model(artifact: Artifact, options: RuntimeOptions, *,
               reducing_gap: float | None = REDUCING_GAP) -> ModelRuntime:
    """Open both sessions for an artifact, check them against its metadata, warm them up.
    ``reducing_gap``: the image preparation's (PreparationOptions.reducing_gap)."""
    started = time.perf_counter()
    metadata = artifact.metadata
    InputSpec.from_recipe(metadata.input)  # a bad recipe fails before the heavy work
    proto = onnx.load(str(artifact.model_path))
    _check_names(proto, metadata)
    sharing = options.share_weights and options.cpu_only
    # What the features session shares is read in place from the file where its bytes allow.
    mapped = _map_weights(artifact, proto) if sharing else None
    dense = _detach_shared_weights(proto, DENSE_WEIGHTS, mapped) if sharing else {}
    convs = _detach_shared_weights(proto, CONV_WEIGHTS, mapped) if sharing else {}
    filters = _conv_filters(proto, metadata.layers, convs, mapped)
    # The explanation heads read the same arrays the sessions share: no second copy.
    explainable, explain_unavailable = _describe(artifact.name, metadata, proto, {**dense, **convs})
    graphs = _Graphs.serialize(proto, metadata, dense, convs, in_place=mapped.names if mapped else frozenset())
    del proto  # the parsed protobuf holds a copy of every weight

    with _SessionOpener(graphs, options) as opener:
        logits_session, features_session = opener.logits(), opener.features()
        tolerance = INT8_AGREEMENT if metadata.precision is Precision.INT8 else FLOAT_AGREEMENT
        if graphs.convs and not _agree(logits_session, features_session, metadata.input.name, metadata.output.name,
                                       tolerance):
            log.warning("%s version %d: the features session with shared conv weights disagrees with the "
                        "logits session; rebuilding it with its own conv weights", artifact.name, artifact.version)
            features_session = opener.features(own_convs=True)
        model = ModelRuntime(
            artifact=artifact,
            spec=InputSpec.from_recipe(metadata.input, reducing_gap=reducing_gap),
            logits_session=logits_session,
            features_session=features_session,
            provider=logits_session.get_providers()[0],
            input_name=metadata.input.name,
            output_name=metadata.output.name,
            layer_names=metadata.layer_names,
            filters=filters,
            initial_filters=InitialFilters.listed(artifact.initial_weights_path, _layers_by_weight(metadata.layers),
                                                  model=artifact.name, version=artifact.version),
            shared_weights=graphs.shared,
            mapped=mapped,
            explainable=explainable,
            explain_unavailable=explain_unavailable,
        )
        _warm_up(model)
        model.batch_costs = time_batches(model)
    del graphs, opener  # the serialized graphs: before the heap is trimmed
    _release_free_memory()
    if mapped is not None:
        mapped.release()
    model.load_seconds = time.perf_counter() - started
    return model


def _map_weights(artifact: Artifact, proto: onnx.ModelProto) -> MappedWeights | None:
    """A map of the version's ONNX file when it has weights large enough to share, else
    None. A file the map cannot walk keeps its weights copied."""
    if not any(len(t.raw_data) >= SHARE_MIN_BYTES for t in proto.graph.initializer):
        return None
    try:
        return MappedWeights(artifact.model_path, artifact.name, artifact.version)
    except (OSError, ValueError) as exc:
        log.warning("%s version %d: weights copied, not read in place: %s", artifact.name, artifact.version, exc)
        return None


def _check_names(proto: onnx.ModelProto, metadata: Metadata) -> None:
    """The graph has the input and every output the metadata names."""
    graph_outputs = [o.name for o in proto.graph.output]
    missing = [n for n in [metadata.output.name, *metadata.layer_names] if n not in graph_outputs]
    if missing:
        raise ValueError(f"the ONNX graph lacks output(s) named in metadata: {', '.join(missing)}")
    graph_inputs = [i.name for i in proto.graph.input]
    if metadata.input.name not in graph_inputs:
        raise ValueError(f"the ONNX graph has no input {metadata.input.name!r} (it has {graph_inputs})")


@dataclass
class _Graphs:
    """The graphs the sessions open, serialized, and the weights they share (detached from
    the graphs, each array held once in this process)."""

    features: bytes
    """Every output, dense and conv weights shared."""
    features_own_convs: bytes
    """Every output, dense weights shared, conv weights its own (the fallback)."""
    logits: bytes
    """The class output alone (the fast path), its layout optimizer reading its own conv weights."""
    dense: dict[str, np.ndarray]
    convs: dict[str, np.ndarray]
    logits_own: frozenset[str]
    """Dense weights the logits graph keeps in itself (int8: see ``serialize``)."""
    logits_prepacks: bool = False
    """The logits session packs its own copy of the float dense weights from the shared
    arrays, which are read in place (see ``serialize``)."""

    @classmethod
    def serialize(cls, proto: onnx.ModelProto, metadata: Metadata, dense: dict[str, np.ndarray],
                  convs: dict[str, np.ndarray], *, in_place: frozenset[str] = frozenset()) -> _Graphs:
        """Each graph from ``proto``, whose ``dense`` and ``convs`` weights are detached
        (``in_place``: those read in place from the file); ``proto`` is changed on the way
        (a copy would double the memory a load needs)."""
        features = proto.SerializeToString()
        _reattach(proto, convs)  # the logits session's layout optimizer reads them
        features_own_convs = proto.SerializeToString() if convs else features
        # int8 dense weights stay in the logits graph: its fused integer Gemms prepack them,
        # which sharing forbids (unpacked, AlexNet's int8 predictions ran 20x slower at batch 1).
        own = {name: array for name, array in dense.items() if array.dtype in (np.int8, np.uint8)}
        _reattach(proto, own)
        # Float ones read in place are the other sessions' copy: the logits session packs its
        # own from them (unpacked, AlexNet's float predictions ran 24% slower at batch 1 and 5%
        # at 16), at no cost at idle. One not read in place keeps every one shared, unpacked.
        floats = dense.keys() - own.keys()
        class_output_only(proto, metadata.output.name)
        return cls(features, features_own_convs, proto.SerializeToString(), dense, convs, frozenset(own),
                   logits_prepacks=bool(floats) and floats <= in_place)

    @property
    def shared(self) -> dict[str, np.ndarray]:
        return {**self.dense, **self.convs}


class _SessionOpener:
    """Opens onnxruntime sessions over ``_Graphs``: the shared weights as OrtValues, and the
    sparse placeholder file their graphs point at, which exists only while it is open."""

    def __init__(self, graphs: _Graphs, options: RuntimeOptions) -> None:
        self.graphs, self.options = graphs, options
        self._folder = tempfile.TemporaryDirectory(prefix="convscope-weights-")
        self._opened = 0
        shared = graphs.shared
        self.values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in shared.items()}

    def __enter__(self) -> _SessionOpener:
        if self.graphs.shared:
            with (Path(self._folder.name) / _PLACEHOLDER).open("wb") as placeholder:
                placeholder.truncate(max(a.nbytes for a in self.graphs.shared.values()))  # sparse
        return self

    def __exit__(self, *exc: object) -> None:
        self._folder.cleanup()

    def logits(self) -> ort.InferenceSession:
        values = {name: self.values[name] for name in self.graphs.dense if name not in self.graphs.logits_own}
        return self._open(self.graphs.logits, values, prepack=self.graphs.logits_prepacks)

    def features(self, own_convs: bool = False) -> ort.InferenceSession:
        if own_convs:
            return self._open(self.graphs.features_own_convs, {name: self.values[name] for name in self.graphs.dense})
        return self._open(self.graphs.features, self.values, layout=not self.graphs.convs)

    def _open(self, graph: bytes, values: dict[str, ort.OrtValue], *, layout: bool = True,
              prepack: bool = False) -> ort.InferenceSession:
        folder = Path(self._folder.name)
        options = self.options.session_options(values, folder, layout=layout, prepack=prepack)
        if not self.options.cpu_only:  # the provider fallback reopens the session from these bytes
            return ort.InferenceSession(graph, sess_options=options, providers=self.options.providers)
        # From a file: a session opened from bytes keeps them for its life (onnxruntime's
        # InferenceSession._model_bytes), and an int8 logits graph holds its 54 MB of dense
        # weights (AlexNet). The CPU provider has nothing to fall back to.
        self._opened += 1
        path = folder / f"graph-{self._opened}.onnx"
        path.write_bytes(graph)
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=self.options.providers)
        finally:
            path.unlink()


def _describe(name: str, metadata: Metadata, proto: onnx.ModelProto,
              shared: dict[str, np.ndarray]) -> tuple[ExplainableModel | None, str | None]:
    """The explanation engine's view of the graph, its heads reading ``shared`` in place.
    A graph it cannot analyse costs the model its explanations, never its predictions."""
    try:
        return describe(name, metadata, proto, shared=shared), None
    except Exception as exc:  # an odd graph or metadata: predictions must still serve
        log.warning("model %s: explanations unavailable: %s", name, exc)
        return None, f"the model's graph could not be analysed for explanations ({type(exc).__name__}: {exc})"


def class_output_only(proto: onnx.ModelProto, output_name: str) -> None:
    """The graph as the predictions run it: the class output its only output, and only the
    nodes it needs. What only a tap read goes: an int8 version's view pair of a tapped
    layer, left in, would give its Conv's output two readers (onnxruntime fuses a Conv into
    an integer kernel only when one QuantizeLinear reads it); and without the taps a float16
    graph rounds where the original file does (a tap rounds its value to float16, where
    onnxruntime's CPU provider otherwise goes on in float32 between the Casts it inserts).
    A pooling that leaves its input as it is becomes an Identity (``_pools_as_identity``)."""
    keep = [o for o in proto.graph.output if o.name == output_name]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    graph = proto.graph
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(value for value in node.input if value)
    if len(kept) < len(graph.node):
        kept.reverse()
        del graph.node[:]
        graph.node.extend(kept)
    _pools_as_identity(graph)


# Pooling operators that, over a 1x1 window moved one step at a time with no padding, give
# back their input: AlexNet's and VGG's adaptive pooling exported at their own input size.
# (Not LpPool: over one value it gives the value's magnitude.)
_POOLS = ("AveragePool", "MaxPool")


def _pools_as_identity(graph: onnx.GraphProto) -> None:
    """Each pooling node that leaves its input as it is becomes an Identity, in place. In an
    int8 graph onnxruntime runs such a pool between a DequantizeLinear and a QuantizeLinear as
    QLinearAveragePool (3.5% of AlexNet's int8 predictions at batch 16, for nothing); an
    Identity it removes, and the pair around it with it, so the convs and the dense layers
    meet as int8. The features graph keeps the node: its catalogue names what the model has."""
    for node in graph.node:
        if node.op_type not in _POOLS or len([o for o in node.output if o]) != 1:
            continue  # MaxPool's Indices output is not its input
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        ones = all(k == 1 for k in attributes.get("kernel_shape", []))
        steps = all(s == 1 for s in attributes.get("strides", []))
        dilations = all(d == 1 for d in attributes.get("dilations", []))
        unpadded = not any(attributes.get("pads", [])) and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")
        if "kernel_shape" in attributes and ones and steps and dilations and unpadded:
            node.op_type = "Identity"
            node.domain = ""
            del node.attribute[:]


def _release_free_memory() -> None:
    """Hand the heap pages that loading freed (the parsed graph, onnxruntime's load-time
    copies) back to the system. glibc keeps them in the loading thread's malloc arena
    otherwise: 50-70 MB of idle RSS for AlexNet. A no-op off glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _warm_up(model: ModelRuntime) -> None:
    """One run through each session: first-run allocations happen now, not in a request,
    and a graph whose shapes disagree with its metadata fails here, at load."""
    batch = np.zeros((1, *model.spec.shape), dtype=np.float32)
    (logits,) = model.run(batch, (model.output_name,))
    labels = model.signature.labels
    if logits.shape != (1, len(labels)):
        raise ValueError(
            f"the class output has shape {list(logits.shape)} for one image, but metadata "
            f"lists {len(labels)} labels"
        )
    if model.layer_names:
        maps = model.run(batch, tuple(model.layer_names))
        for name, value in zip(model.layer_names, maps):
            expected = model.signature.layer_shape(name)
            if tuple(value.shape[1:]) != expected:
                raise ValueError(
                    f"layer {name} yields shape {list(value.shape[1:])} per image; "
                    f"metadata says {list(expected)}"
                )


def time_batches(model: ModelRuntime, sizes: tuple[int, ...] = COST_BATCHES, runs: int = COST_RUNS) -> BatchCosts:
    """What a predictions run costs at each of ``sizes``: the median of ``runs`` timed runs
    after an untimed one (which also makes onnxruntime allocate for that size now, not in
    a request). The batcher chooses how long its batches wait from these."""
    seconds = {}
    for size in sizes:
        batch = np.zeros((size, *model.spec.shape), dtype=np.float32)
        model.run(batch, (model.output_name,))
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            model.run(batch, (model.output_name,))
            times.append(time.perf_counter() - started)
        seconds[size] = float(np.median(times))
    return BatchCosts(seconds)


def _layers_by_weight(layers: list[Layer]) -> dict[str, list[str]]:
    """Each kernel initializer and every layer that shows it: a Conv and the ReLU after
    it are two layers over one set of kernels, and both must show them."""
    by_weight: dict[str, list[str]] = {}
    for layer in layers:
        if layer.weight:
            by_weight.setdefault(layer.weight, []).append(layer.name)
    return by_weight


def _conv_filters(proto: onnx.ModelProto, layers: list[Layer], shared: dict[str, np.ndarray],
                  mapped: MappedWeights | None = None) -> Kernels:
    """The learned kernels behind each conv layer, keyed by layer name: the shared arrays
    where the sessions share them (no second copy), else read in place from the file where
    it is mapped, else read from the graph. An int8 kernel (read by a DequantizeLinear)
    comes with that node's scale and zero point."""
    wanted = _layers_by_weight(layers)
    initializers = {i.name: i for i in proto.graph.initializer}
    dequantizers = {node.input[0]: node for node in proto.graph.node
                    if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")}
    found: dict[str, np.ndarray | QuantizedKernel] = {}
    for weight, names in wanted.items():
        if weight not in initializers:
            continue
        array = shared.get(weight)
        if array is None:
            array = _mapped_view(mapped, initializers[weight])
        if array is None:
            array = numpy_helper.to_array(initializers[weight])
        if array.ndim != 4:
            continue
        kernel: np.ndarray | QuantizedKernel = array.astype(np.float32, copy=False)
        if array.dtype in (np.int8, np.uint8):
            node = dequantizers.get(weight)
            if node is None or len(node.input) < 2 or node.input[1] not in initializers:
                continue  # int8 values without their scale draw nothing meaningful
            zero = (numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and node.input[2]
                    else np.zeros((), dtype=array.dtype))
            axis = next((int(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 1)
            kernel = QuantizedKernel(array, numpy_helper.to_array(initializers[node.input[1]]), zero, axis % array.ndim)
        for name in names:
            found[name] = kernel
    return Kernels(found)


# How close the two sessions' class scores must be, relative to their largest: the same
# float graph gives the same scores to rounding; an int8 graph's fused integer kernels
# (logits session) and its unfused Q/DQ pairs (features session) round differently, by a
# few of the output's quantization steps at most. A wrongly shared weight misses by far more.
FLOAT_AGREEMENT = 1e-4
INT8_AGREEMENT = 5e-2


def _agree(logits: ort.InferenceSession, features: ort.InferenceSession, input_name: str, output_name: str,
           tolerance: float = FLOAT_AGREEMENT) -> bool:
    """Whether both sessions give the same class scores for a seeded random image (a zero
    image would not do: it reads no conv weight, only biases)."""
    shape = [d if isinstance(d, int) else 1 for d in logits.get_inputs()[0].shape]
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    (a,) = logits.run([output_name], {input_name: image})
    (b,) = features.run([output_name], {input_name: image})
    return bool(np.abs(a - b).max() <= tolerance * max(1.0, float(np.abs(a).max())))


# Which initializers may be shared, by (op, input index) of every node that reads them. An
# int8 weight is read by a DequantizeLinear: what reads that node's output counts.
DENSE_WEIGHTS = frozenset({("Gemm", 1), ("MatMul", 1)})
SHAREABLE_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.INT8, onnx.TensorProto.UINT8})
CONV_WEIGHTS = frozenset({("Conv", 1)})


def _readers(proto: onnx.ModelProto) -> dict[str, list[tuple[str, int]]]:
    """Every value's readers, (op, input index); a DequantizeLinear's data input is read by
    whatever reads its output (an int8 weight is the weight of the op its float value feeds)."""
    direct: dict[str, list[tuple[str, int]]] = {}
    for node in proto.graph.node:
        for index, name in enumerate(node.input):
            direct.setdefault(name, []).append((node.op_type, index))
    readers = dict(direct)
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input and direct.get(node.input[0]) == [("DequantizeLinear", 0)]:
            readers[node.input[0]] = direct.get(node.output[0], [])
    return readers


def _detach_shared_weights(proto: onnx.ModelProto, readers_allowed: frozenset[tuple[str, int]],
                           mapped: MappedWeights | None = None) -> dict[str, np.ndarray]:
    """Move the large weights that only ``readers_allowed`` read out of the graph into numpy
    arrays (views of ``mapped`` where it holds them), leaving external-data placeholders in
    their place."""
    readers = _readers(proto)
    shared: dict[str, np.ndarray] = {}
    for tensor in proto.graph.initializer:
        uses = readers.get(tensor.name, [])
        if not uses or any(use not in readers_allowed for use in uses):
            continue
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.raw_data) < SHARE_MIN_BYTES:
            continue
        # Only float32, and an int8 version's int8 weights (read through their DequantizeLinear,
        # which onnxruntime leaves in the graph: the features session's answers equal a plain
        # session's, tests/service/models/test_runtime.py): the CPU provider runs a float16
        # Gemm/MatMul by casting its weight to float32, and folds that Cast at load from the
        # placeholder's bytes, not the shared array (an imported float16 model served near-zero
        # scores).
        if tensor.data_type not in SHAREABLE_TYPES:
            continue
        array = _mapped_view(mapped, tensor)
        if array is None:
            array = np.ascontiguousarray(numpy_helper.to_array(tensor))
        shared[tensor.name] = array
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", _PLACEHOLDER), ("offset", "0"), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return shared


def _mapped_view(mapped: MappedWeights | None, tensor: onnx.TensorProto) -> np.ndarray | None:
    if mapped is None or tensor.data_type not in SHAREABLE_TYPES:
        return None
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    return mapped.view(tensor.name, tensor.raw_data, dtype, tuple(tensor.dims))


def _reattach(proto: onnx.ModelProto, shared: dict[str, np.ndarray]) -> None:
    """Put detached weights back into the graph (for a session that must read them)."""
    for tensor in proto.graph.initializer:
        array = shared.get(tensor.name)
        if array is not None:
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
