"""`python -m model_export quantize MODEL_DIR`: the next version of a model, in int8.

The float32 version (the newest, or ``--version N``) is quantized statically in the QDQ
format with onnxruntime's own tools: int8 weights per output channel (symmetric), int8
activations per tensor (asymmetric), each activation's range calibrated on held-out images
of the model's own data set (or ``--data-dir``) with the chosen method. The graph keeps its
input, its class output and every tapped layer's output under the same names, each a
DequantizeLinear's float32 output, so the service serves the int8 version exactly as the
float one: same layer names, same feature maps (dequantized), same explanations.

Then a gate: other held-out images, never used for calibration, run through both versions.
The int8 version is written only if its top-1 class agrees with the float version's on at
least ``--min-agreement`` of them; otherwise nothing is written and the run exits 2 saying
what it measured and what to try. What the gate measured goes into the artifact
(metadata ``precision`` and ``quantization``, docs/artifact.md): the agreement, each
version's accuracy where the images have labels the model knows, the largest difference of
any class probability, every tapped layer's error (SQNR) against the float version, and
whether int8 runs faster than float here (a few timed runs of each: the 28 px TinyVGG runs
slower in int8, AlexNet 3.5x faster; never assumed).

Why these choices (measured, docs/artifact.md "int8 versions"):
- static, not dynamic: dynamic quantization (weights only) ran AlexNet slower than float;
- QDQ, not QOperator: the graph stays a float graph with Q/DQ pairs, so the tapped outputs
  keep their names and onnxruntime fuses the pairs into integer kernels where nothing reads
  the float values in between (the service's logits-only session);
- no ``quant_pre_process``: the exporters already fold batch norms into convs, and on
  AlexNet it changed nothing but cost 16 s;
- calibration one batch at a time (``CalibStridedMinMax``): onnxruntime's histogram
  calibrators otherwise keep every activation of every calibration image in memory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifact import (
    INITIAL_WEIGHTS_FILE,
    MODEL_FILE,
    CalibrationMethod,
    ExplanationsRecord,
    Layer,
    LayerError,
    Metadata,
    OutputKind,
    Precision,
    QuantizationRecord,
    QuantizeAttempt,
    SpeedRecord,
    read_metadata,
    verify_files,
)
from artifact.onnx_file import write_model

from . import channel_view, explanations, mixed_precision
from .datasets import DATASETS, Dataset, Split, limit, load_any_images, load_dataset
from .errors import ExportError
from .metadata import opset_of, package_versions
from .preprocessing import InputSpec, preprocess
from .staging import Staging, complete_versions

# Chosen by measurement on the trained digits TinyVGG and the Fashion-MNIST alexnet-small
# (docs/artifact.md, "int8 versions"): the three methods agree within one image there, and
# min-max is the one that never clips an activation the float version produces.
DEFAULT_METHOD = CalibrationMethod.MINMAX
DEFAULT_MIN_AGREEMENT = 0.99
# Each further attempt costs a calibration and an evaluation: 2, 4, 8 layers at most.
DEFAULT_MAX_FLOAT_LAYERS = 8
# Held-out images calibrating the ranges, and judging the result, by input size (as the
# channel view: a 224 px AlexNet pass costs ~20 ms a image on 2 cores, a 28 px one 0.1 ms).
DEFAULT_CALIBRATION_IMAGES = 256
DEFAULT_CALIBRATION_IMAGES_LARGE = 64
DEFAULT_EVALUATION_IMAGES = 1000
DEFAULT_EVALUATION_IMAGES_LARGE = 256
# At most this share of the held-out images calibrates; the rest judge.
CALIBRATION_SHARE = 1 / 3
# Bytes of outputs one evaluation run may hold (both versions' taps): bounds memory.
EVALUATION_BATCH_BYTES = 96 << 20
# The worst channel of a layer is chosen among channels whose power over the evaluation
# images is at least this share of the layer's average channel's.
WORST_CHANNEL_MIN_SHARE = 0.01
SPEED_BATCHES = (1, 16)
SPEED_RUNS = 5
WEIGHT_SUFFIX = "_quantized"  # onnxruntime's name for a quantized initializer


class QuantizeRefused(ExportError):
    """The gate said no: the int8 version disagrees with the float one too often."""


@dataclass
class QuantizeOptions:
    model_dir: str  # <repository>/<name>
    version: int | None = None  # the float32 version to quantize (default: the newest)
    data_dir: str | None = None  # images instead of the model's own held-out split
    method: CalibrationMethod = DEFAULT_METHOD
    calibration_images: int | None = None  # None: by input size (above)
    evaluation_images: int | None = None
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    # When the gate would refuse: at most this many layers kept float32 (0: never).
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS
    progress: bool = True
    # The explanation methods measured again on the int8 version (model_export/explanations.py):
    # its figures are its own, not its float version's.
    explain_images: int = 30
    explain_seconds: float = 60.0


@dataclass(frozen=True)
class Source:
    """The float32 version being quantized."""

    directory: Path
    metadata: Metadata

    @property
    def model_path(self) -> Path:
        return self.directory / self.metadata.model_file

    @property
    def version(self) -> int:
        return int(self.directory.name)


@dataclass(frozen=True)
class HeldOut:
    """Images the model did not learn from, with labels where they name the model's classes."""

    images: Split
    classes: list[str]
    targets: np.ndarray | None  # per image, the model's label index; None: no usable labels
    description: str
    brought: bool = False  # images given with --data-dir, not the held-out split of a model trained here


@dataclass
class _Sums:
    """Running sums of one output over the evaluation images: per channel, signal and noise."""

    signal: np.ndarray  # float64 per channel (or per feature of a flat output)
    noise: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> _Sums:
        return cls(np.zeros(channels), np.zeros(channels))

    def add(self, reference: np.ndarray, other: np.ndarray) -> None:
        axes = (0, *range(2, reference.ndim))
        ref = reference.astype(np.float64)
        self.signal += np.square(ref).sum(axis=axes)
        self.noise += np.square(ref - other.astype(np.float64)).sum(axis=axes)

    def record(self, name: str, spatial: bool) -> LayerError:
        signal, noise = float(self.signal.sum()), float(self.noise.sum())
        worst = None
        worst_db = None
        if spatial and len(self.signal) > 1:
            # Among the channels that carry something: a nearly silent one that int8 rounds to
            # zero everywhere is 0 dB, and says nothing about what the layer shows.
            carrying = self.signal >= WORST_CHANNEL_MIN_SHARE * self.signal.mean()
            per_channel = np.array([_sqnr(s, n) if n > 0 and keep else np.inf
                                    for s, n, keep in zip(self.signal, self.noise, carrying, strict=True)])
            if np.isfinite(per_channel).any():
                worst = int(np.argmin(per_channel))
                worst_db = round(float(per_channel[worst]), 2)
        return LayerError(
            name=name,
            sqnr_db=round(_sqnr(signal, noise), 2) if noise > 0 else None,
            relative_error=float(f"{np.sqrt(noise / signal) if signal > 0 else 0.0:.4g}"),
            worst_channel=worst,
            worst_channel_sqnr_db=worst_db,
        )


def _sqnr(signal: float, noise: float) -> float:
    """In dB; a silent channel (no signal) with noise is -inf, floored to -99 for JSON."""
    if signal <= 0:
        return -99.0
    return float(10 * np.log10(signal / noise))


@dataclass
class Evaluation:
    """What the gate measured on the evaluation images."""

    images: int = 0
    same: int = 0
    float_correct: int = 0
    int8_correct: int = 0
    labelled: bool = False
    max_probability_difference: float = 0.0
    sums: dict[str, _Sums] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        return self.same / self.images if self.images else 0.0

    def accuracy(self, correct: int) -> float | None:
        return correct / self.images if self.labelled and self.images else None

    def layers(self, metadata: Metadata) -> list[LayerError]:
        rows = [self.sums[layer.name].record(layer.name, len(layer.output_shape) == 4) for layer in metadata.layers]
        return [*rows, self.sums[metadata.output.name].record(metadata.output.name, False)]


def quantize(opts: QuantizeOptions) -> Path:
    """Write the next version of the model as int8; returns its directory. QuantizeRefused
    (nothing written) when the gate says no."""
    started = time.perf_counter()
    _check_options(opts)
    source = find_source(Path(opts.model_dir), opts.version)
    metadata = source.metadata
    spec = input_spec(metadata)
    held_out = held_out_images(metadata, opts.data_dir)
    calibration, evaluation = split(held_out, spec, opts, metadata.input.fixed_batch)
    _check_judgeable(len(evaluation), len(calibration), held_out, opts,
                     SplitSizes.wanted(opts, spec),
                     metadata.name or source.directory.parent.name, source.version)
    model_dir = source.directory.parent
    with Staging(model_dir.parent, model_dir.name, None) as staging:
        assert staging.path is not None
        model_path = staging.path / MODEL_FILE
        measured, kept, attempts = _quantize_until_it_agrees(source, model_path, calibration, evaluation,
                                                             held_out, spec, opts)
        _gate(measured, metadata, source.version, opts, attempts)
        weights = weight_names(model_path, metadata.layers)
        layers = [layer.model_copy(update={"weight": weights.get(layer.weight) if layer.weight else None})
                  for layer in metadata.layers]
        _copy_initial_weights(source, staging.path, weights)
        speed = time_versions(source.model_path, model_path, spec, metadata.input.fixed_batch, metadata.output.name)
        views = _views(source, staging.path, model_path, layers, spec, held_out, opts.progress)
        measuring = explanations.MeasureOptions(opts.explain_images, opts.explain_seconds, opts.progress)
        explained = explanations.measure(model_path, metadata.model_copy(update={"layers": layers}), held_out.images,
                                         spec, measuring)
        record = QuantizationRecord(
            quantized_from=source.version,
            method=opts.method,
            data=held_out.description,
            calibration_images=len(calibration),
            evaluation_images=measured.images,
            agreement=round(measured.agreement, 6),
            min_agreement=opts.min_agreement,
            float_accuracy=_rounded(measured.accuracy(measured.float_correct)),
            int8_accuracy=_rounded(measured.accuracy(measured.int8_correct)),
            max_probability_difference=round(measured.max_probability_difference, 6),
            layers=measured.layers(metadata),
            float_layers=kept,
            attempts=attempts,
            speed=speed,
            int8_faster=speed[-1].int8_seconds < speed[-1].float_seconds if speed else None,
            seconds=round(time.perf_counter() - started, 3),
        )
        opset = _opset(model_path)
        return staging.commit(lambda version, files: int8_metadata(
            metadata, version, files, layers, record, views, opset, explained))


def _quantize_until_it_agrees(source: Source, model_path: Path, calibration: Images, evaluation: Images,
                              held_out: HeldOut, spec: InputSpec, opts: QuantizeOptions
                              ) -> tuple[Evaluation, list[str], list[QuantizeAttempt]]:
    """Quantize every layer; while the gate would refuse, again with the layers adding the
    most noise kept float (model_export/mixed_precision.py), a few more each time, within
    ``opts.max_float_layers``. The last attempt's measurement, its float layers, every attempt."""
    float_graph = quantizable_graph(source.model_path, model_path.with_name(".float-graph.onnx"))
    try:
        return _quantize_attempts(source, float_graph, model_path, calibration, evaluation, held_out, spec, opts)
    finally:
        if float_graph != source.model_path:
            float_graph.unlink(missing_ok=True)


def _quantize_attempts(source: Source, float_graph: Path, model_path: Path, calibration: Images,
                       evaluation: Images, held_out: HeldOut, spec: InputSpec, opts: QuantizeOptions
                       ) -> tuple[Evaluation, list[str], list[QuantizeAttempt]]:
    metadata = source.metadata
    kept: list[str] = []
    attempts: list[QuantizeAttempt] = []
    graph = None
    steps = iter(mixed_precision.float_layer_steps(len(metadata.layers), opts.max_float_layers))
    views = view_ranges(float_graph, calibration)
    while True:
        excluded: list[str] = mixed_precision.excluded_nodes(graph, kept) if graph is not None else []
        calibrate_and_quantize(float_graph, model_path, calibration, spec, opts, excluded=excluded,
                               class_outputs=class_outputs(metadata), views=views)
        measured = evaluate(source.model_path, model_path, evaluation, held_out, metadata, opts.progress)
        attempts.append(QuantizeAttempt(float_layers=len(kept), agreement=round(measured.agreement, 6),
                                        int8_accuracy=_rounded(measured.accuracy(measured.int8_correct))))
        count = next(steps, None) if measured.agreement < opts.min_agreement else None
        if count is None:
            return measured, kept, attempts
        if graph is None:
            graph = mixed_precision.layer_nodes(float_graph, [*metadata.layer_names, metadata.output.name])
        more = mixed_precision.most_hurt(measured.layers(metadata), graph, count, kept)
        if len(more) == len(kept):
            return measured, kept, attempts  # no layer left that adds noise of its own
        kept = more
        if opts.progress:
            print(f"agreement {measured.agreement:.4f} < {opts.min_agreement}: again with {len(kept)} layer(s) "
                  f"kept float32 ({', '.join(kept)})", file=sys.stderr)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _check_options(opts: QuantizeOptions) -> None:
    if not 0 <= opts.min_agreement <= 1:
        raise ExportError(f"--min-agreement must be between 0 and 1, not {opts.min_agreement}")
    for value, flag in ((opts.calibration_images, "--calibration-images"),
                        (opts.evaluation_images, "--evaluation-images")):
        if value is not None and value < 1:
            raise ExportError(f"{flag} must be at least 1")


# ---- the float version and its images ------------------------------------------------------

def find_source(model_dir: Path, version: int | None) -> Source:
    """The float32 version to quantize: ``version``, or the newest complete float32 one."""
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a model directory (<repository>/<name>, holding versions)")
    complete = complete_versions(model_dir)
    if not complete:
        raise ExportError(f"{model_dir} holds no complete version to quantize")
    if version is not None and version not in complete:
        raise ExportError(f"{model_dir} has no version {version}; valid: {', '.join(map(str, complete))}")
    candidates = [version] if version is not None else list(reversed(complete))
    seen = []
    for number in candidates:
        directory = model_dir / str(number)
        metadata = _read(directory)
        if metadata.precision is Precision.FLOAT32:
            verify_files(directory, metadata)
            return Source(directory, metadata)
        seen.append(f"{number} ({metadata.precision.value}, from version {_origin(metadata)})")
    floats = [v for v in complete if _read(model_dir / str(v)).precision is Precision.FLOAT32]
    raise ExportError(f"version {', '.join(seen)} of {model_dir.name} is already quantized; quantize a float32 "
                      f"version: {', '.join(map(str, floats)) or '(none)'}")


def _origin(metadata: Metadata) -> str:
    return str(metadata.quantization.quantized_from) if metadata.quantization is not None else "?"


def _read(directory: Path) -> Metadata:
    from artifact import ArtifactError

    try:
        return read_metadata(directory)
    except ArtifactError as exc:
        raise ExportError(f"{directory}: {exc}") from None


def input_spec(metadata: Metadata) -> InputSpec:
    recipe = metadata.input
    return InputSpec(channels=recipe.channels, size=recipe.size, mean=tuple(recipe.mean), std=tuple(recipe.std),
                     scale=recipe.scale)


def held_out_images(metadata: Metadata, data_dir: str | None) -> HeldOut:
    """The images to calibrate and judge on. A model trained here: the held-out split it was
    trained against, found again from its metadata (data set, seed, size); ``data_dir`` is
    then where that data set lies (Fashion-MNIST's idx files, the ImageFolder tree) when not
    in its default place. Any other model (an import): ``data_dir``, images it did not
    learn from, labelled (ImageFolder) or not (a flat folder)."""
    training = metadata.training
    dataset = training.dataset if training is not None else None
    if training is None or dataset not in DATASETS:
        if data_dir is None:
            what = "an imported model" if training is None else f"a model trained on {dataset}"
            raise ExportError(f"{what} has no held-out split this command can find by itself: give --data-dir DIR "
                              "(images it did not learn from: an ImageFolder tree of labelled ones, or a flat folder)")
        return _labelled(load_any_images(data_dir), metadata.labels, f"--data-dir {data_dir}", brought=True)
    if dataset == "imagefolder" and data_dir is None:
        raise ExportError("a model trained on an ImageFolder tree: give that tree as --data-dir (its held-out split "
                          "is found again from the seed the export used)")
    seed = training.seed or 0
    data = load_dataset(dataset, data_dir, seed)
    data.val = limit(data.val, training.val_size, seed)  # the very split the export evaluated on
    where = f" in {data_dir}" if data_dir else ""
    return _labelled(data, metadata.labels, f"{dataset}{where}, held-out split (seed {seed}, {len(data.val)} images)")


def _labelled(data: Dataset, labels: list[str], description: str, *, brought: bool = False) -> HeldOut:
    """Labels count where every class of the images is one of the model's labels, by name (a
    folder cannot be named "T-shirt/top": a label's "/" matches a folder name's "-")."""
    if len(data.val) == 0:
        raise ExportError(f"{description}: no images")
    index = {label: i for i, label in enumerate(labels)}
    index.update({label.replace("/", "-"): i for i, label in enumerate(labels) if "/" in label})
    present = {data.classes[int(c)] for c in np.unique(data.val.labels)}
    targets = None
    if all(name in index for name in present):
        targets = np.array([index[data.classes[int(c)]] for c in data.val.labels], dtype=np.int64)
    return HeldOut(data.val, data.classes, targets, description, brought)


@dataclass(frozen=True)
class Images:
    """Preprocessed images (and their targets where labelled)."""

    batches: list[np.ndarray]
    targets: list[np.ndarray | None]

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass(frozen=True)
class SplitSizes:
    """How many held-out images calibrate and how many judge, asked for: the options', else
    the defaults by input size; calibration takes at most a share of what there is."""

    calibration: int
    evaluation: int

    @classmethod
    def wanted(cls, opts: QuantizeOptions, spec: InputSpec) -> SplitSizes:
        large = channel_view.large_input(spec.size)
        return cls(opts.calibration_images or (DEFAULT_CALIBRATION_IMAGES_LARGE if large else DEFAULT_CALIBRATION_IMAGES),
                   opts.evaluation_images or (DEFAULT_EVALUATION_IMAGES_LARGE if large else DEFAULT_EVALUATION_IMAGES))

    def of(self, total: int) -> tuple[int, int]:
        """(calibration, evaluation) images out of ``total``."""
        cal = max(1, min(self.calibration, int(total * CALIBRATION_SHARE)))
        return cal, min(self.evaluation, total - cal)

    def total_for(self, evaluation: int) -> int:
        """The fewest held-out images that leave ``evaluation`` to judge on (asking for as many)."""
        sizes = SplitSizes(self.calibration, max(self.evaluation, evaluation))
        total = evaluation + 1
        while sizes.of(total)[1] < evaluation:
            total += 1
        return total


def split(held_out: HeldOut, spec: InputSpec, opts: QuantizeOptions, fixed_batch: int | None = None,
          seed: int = 0) -> tuple[Images, Images]:
    """A seeded calibration set and a disjoint evaluation set from the held-out images."""
    total = len(held_out.images)
    cal, ev = SplitSizes.wanted(opts, spec).of(total)
    if ev < 1:
        raise ExportError(f"{held_out.description} has {total} image(s): too few to calibrate on some and judge "
                          "on others (give --data-dir with more)")
    order = np.random.default_rng(seed).permutation(total)
    batch = 16 if channel_view.large_input(spec.size) else 64
    return (_images(held_out, order[:cal], spec, fixed_batch or batch, fixed_batch),
            _images(held_out, order[cal:cal + ev], spec, fixed_batch or batch, fixed_batch))


def _images(held_out: HeldOut, indices: np.ndarray, spec: InputSpec, batch: int, fixed: int | None) -> Images:
    if fixed:
        indices = indices[: len(indices) - len(indices) % fixed] if len(indices) >= fixed else indices
    batches, targets = [], []
    for start in range(0, len(indices), batch):
        chosen = np.sort(indices[start:start + batch])
        subset = held_out.images.subset(chosen)
        batches.append(preprocess(subset.images, spec))
        targets.append(held_out.targets[chosen] if held_out.targets is not None else None)
    return Images(batches, targets)


# ---- calibration and quantization ----------------------------------------------------------

class _Reader:
    """onnxruntime's CalibrationDataReader over our batches, one per ``collect_data`` call
    (``CalibStridedMinMax`` = 1 batch), with a progress bar."""

    def __init__(self, images: Images, input_name: str, bar: Any) -> None:
        self.images = images
        self.input_name = input_name
        self.bar = bar
        self._items: Iterator[np.ndarray] = iter(images.batches)

    def __len__(self) -> int:
        return len(self.images.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._items = iter(self.images.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._items, None)
        if batch is None:
            return None
        self.bar.update(len(batch))
        return {self.input_name: batch}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools print and log advice meant for their own users."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


# DequantizeLinear's ``axis`` (per-channel weights) came with opset 13; onnxruntime's
# quantizer writes it at any opset, and an older graph's int8 version would not load.
PER_CHANNEL_OPSET = 13


def quantizable_graph(source: Path, converted: Path) -> Path:
    """The float graph onnxruntime's quantizer reads: ``source`` itself, or, written to
    ``converted``, the same graph

    - at opset 13 where it is older (onnx's version converter): torch.onnx's TorchScript
      exporter and tf2onnx wrote opset 11 and 12 by default for years;
    - computing in float32 where it computes in float16 (an import casts its edges): the
      quantizer's scales would be float16, which onnxruntime's integer kernels do not take
      (a DenseNet's int8 graph failed to load, QLinearConcat; a ResNet-18's ran 10x slower
      than float, unfused). float16 weights widen to float32 exactly; the gate still judges
      the int8 version against the float16 one."""
    import onnx

    model = onnx.load(str(source))
    upgraded = _at_per_channel_opset(model, source)
    widened = _widen_float16(upgraded)
    if upgraded is model and not widened:
        return source
    write_model(upgraded, converted)
    return converted


def _at_per_channel_opset(model: Any, source: Path) -> Any:
    from onnx import version_converter

    opset = opset_of(model)
    if opset is None or opset >= PER_CHANNEL_OPSET:
        return model
    try:
        return version_converter.convert_version(model, PER_CHANNEL_OPSET)
    except Exception as exc:  # the converter's own errors: an op it has no adapter for
        raise ExportError(f"{source} is at opset {opset}; int8 weights per channel need opset {PER_CHANNEL_OPSET}, "
                          f"and onnx's version converter could not convert it ({_reason(exc)}): export the model "
                          f"again at opset {PER_CHANNEL_OPSET} or newer") from None


def _widen_float16(model: Any) -> bool:
    """Every float16 initializer, constant, Cast target and declared type of ``model``'s main
    graph made float32, in place; whether there was any."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    def widen(tensor: Any) -> bool:
        if tensor.data_type != TensorProto.FLOAT16:
            return False
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
        return True

    graph = model.graph
    changed = [widen(t) for t in graph.initializer]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                changed.append(widen(attribute.t))
            elif node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
                changed.append(True)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type == TensorProto.FLOAT16:
            tensor_type.elem_type = TensorProto.FLOAT
            changed.append(True)
    return any(changed)


def _reason(exc: Exception) -> str:
    """A library's error in one line: its type and the last line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[-1] if text else repr(exc)}"


def class_outputs(metadata: Metadata) -> list[str]:
    """The class output, and the logits a final Softmax reads where metadata names them."""
    return [metadata.output.name, *([metadata.output.logits] if metadata.output.logits else [])]


def calibrate_and_quantize(source: Path, target: Path, calibration: Images, spec: InputSpec,
                           opts: QuantizeOptions, input_name: str = "input", excluded: Sequence[str] = (),
                           class_outputs: Sequence[str] = (),
                           views: dict[str, tuple[float, float]] | None = None) -> None:
    """``excluded``: float graph nodes left in float32; ``class_outputs``: the graph's class
    output and the logits a Softmax reads, left unrounded (``float_class_output``); ``views``:
    ``view_ranges`` of ``source`` where the caller has them (measured here otherwise)."""
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from tqdm import tqdm

    method = {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.ENTROPY: OrtMethod.Entropy,
              CalibrationMethod.PERCENTILE: OrtMethod.Percentile}[opts.method]
    with tqdm(total=len(calibration), desc=f"calibrating ({opts.method.value})", unit="img",
              disable=not opts.progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5) as bar, _quiet():
        try:
            quantize_static(
                str(source), str(target), _Reader(calibration, _input_name(source, input_name), bar),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
                nodes_to_exclude=list(excluded),
                extra_options={"CalibStridedMinMax": 1, "WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except Exception as exc:  # onnxruntime's own errors: a graph its quantizer cannot handle
            raise ExportError(f"onnxruntime's quantizer could not quantize {source}: {_reason(exc)}") from None
    if class_outputs:
        float_class_output(target, class_outputs)
    ranges = view_ranges(source, calibration, input_name) if views is None else views
    if ranges:
        add_view_pairs(target, ranges)


def view_ranges(source: Path, calibration: Images, input_name: str = "input") -> dict[str, tuple[float, float]]:
    """The calibrated range of each tapped layer a ReLU or Clip reads (``add_view_pairs``);
    empty where there is none. The same for every attempt of one export: measured once."""
    taps = tapped_activation_inputs(source)
    return tapped_ranges(source, calibration, taps, _input_name(source, input_name)) if taps else {}


def float_class_output(path: Path, names: Sequence[str]) -> list[str]:
    """The class outputs as the last layer computes them, without the QuantizeLinear ->
    DequantizeLinear pair the quantizer puts after it; the names it changed. ``names``: the
    class output and, where a Softmax ends the graph, the logits it reads (metadata's
    ``output.logits``): rounded logits tie, and the Softmax keeps the ties.

    That pair rounds the class scores to 256 steps over their calibrated range, and so swaps
    the top two classes of every image on which they nearly tie: on the Fashion-MNIST
    alexnet-small (3000 held-out images, two calibration draws) it made 28-30 of the 32-34
    top-1 disagreements with the float version (agreement 0.989 -> 0.9987). The last layer
    still reads int8 inputs and weights (onnxruntime fuses it into an integer kernel with a
    float output, QGemm or MatMulIntegerToFloat), so the speed is the same. A graph that
    computes in float16 ends in a Cast to float32 after the pair (the import's): the pair
    is found through it."""
    import onnx

    model = onnx.load(str(path))
    changed = [name for name in names if _unround(model.graph, name)]
    if changed:
        write_model(model, Path(path))
    return changed


def _unround(graph: Any, name: str) -> bool:
    """Replace the Q/DQ pair that ends at ``name`` (or at the tensor a chain of Casts turns
    into ``name``) by an Identity of the pair's float input; whether there was one."""
    from onnx import helper

    producer = {output: node for node in graph.node for output in node.output}
    while name in producer and producer[name].op_type in PASS_THROUGH and producer[name].input:
        name = producer[name].input[0]
    pair = _qdq_pair(producer, name)
    if pair is None:
        return False
    quantize, dequantize = pair
    rounded = quantize.output[0]
    if sum(rounded in node.input for node in graph.node) > 1 or rounded in {o.name for o in graph.output}:
        return False  # the rounded scores feed something else too: left as the quantizer made it
    graph.node.insert(list(graph.node).index(dequantize),
                      helper.make_node("Identity", [quantize.input[0]], [name], name=f"{name}_float"))
    graph.node.remove(dequantize)
    graph.node.remove(quantize)
    return True


# Nodes between the last layer's Q/DQ pair and a class output that change only its type.
PASS_THROUGH = frozenset({"Cast", "Identity"})


def _qdq_pair(producer: dict[str, Any], name: str) -> tuple[Any, Any] | None:
    """(QuantizeLinear, DequantizeLinear) when ``name`` is the output of a DequantizeLinear
    that reads a QuantizeLinear, else None. ``producer``: each tensor's node."""
    dequantize = producer.get(name)
    quantize = producer.get(dequantize.input[0]) if dequantize is not None else None
    if dequantize is None or quantize is None or (dequantize.op_type, quantize.op_type) != (
            "DequantizeLinear", "QuantizeLinear"):
        return None
    return quantize, dequantize


def tapped_activation_inputs(source: Path) -> list[str]:
    """Tapped layers read by a ReLU or Clip (an import taps a Conv and the ReLU after it)."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    tapped = {output.name for output in model.graph.output}
    return sorted({node.input[0] for node in model.graph.node
                   if node.op_type in ("Relu", "Clip") and node.input and node.input[0] in tapped})


def tapped_ranges(source: Path, calibration: Images, names: list[str], input_name: str) -> dict[str, tuple[float, float]]:
    """Each tapped tensor's smallest and largest value over the calibration images (float)."""
    session = _session(source)
    ranges: dict[str, tuple[float, float]] = {}
    for batch in calibration.batches:
        for name, values in zip(names, session.run(names, {input_name: batch}), strict=True):
            low, high = float(values.min()), float(values.max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
    return ranges


def add_view_pairs(path: Path, ranges: dict[str, tuple[float, float]]) -> None:
    """A tapped layer that a ReLU (or Clip) reads gets a Q/DQ pair of its own for the view.

    onnxruntime's quantizer gives a ReLU's input the ReLU's range (from 0), which is right for
    the model (the ReLU drops the rest) but clips every negative value of the tapped map (the
    zoo's ResNet-18: its convs' maps at 3 dB). So the model's pair stays as the quantizer made
    it, feeding the ReLU under a new name, and the tapped name becomes a second pair on the
    same float values with the tensor's own calibrated range: what the features session
    shows. The logits session drops that pair with the other taps (it feeds no output there),
    so the int8 kernels fuse as before."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    for name, (low, high) in ranges.items():
        pair = _qdq_pair(producer, name)
        if pair is None:
            continue
        quantize, dequantize = pair
        main = f"{name}_to_activation"
        dequantize.output[0] = main
        for node in graph.node:
            node.input[:] = [main if value == name else value for value in node.input]
        low, high = min(low, 0.0), max(high, 0.0)
        scale = np.float32((high - low) / 255 if high > low else 1.0)
        zero = np.int8(np.clip(np.rint(-128 - low / scale), -128, 127))
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_view_scale"),
                                  numpy_helper.from_array(np.array(zero, np.int8), f"{name}_view_zero_point")])
        position = list(graph.node).index(quantize) + 1
        view = [helper.make_node("QuantizeLinear", [quantize.input[0], f"{name}_view_scale", f"{name}_view_zero_point"],
                                 [f"{name}_view_quantized"], name=f"{name}_view_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{name}_view_quantized", f"{name}_view_scale",
                                                      f"{name}_view_zero_point"], [name], name=f"{name}_view_DequantizeLinear")]
        for offset, node in enumerate(view):
            graph.node.insert(position + offset, node)
        producer = {output: node for node in graph.node for output in node.output}
    write_model(model, Path(path))


def _input_name(path: Path, default: str) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs[0] if inputs else default


def weight_names(model_path: Path, layers: Sequence[Layer]) -> dict[str, str]:
    """Each float kernel initializer -> the int8 one that replaced it (read by a
    DequantizeLinear), or itself where it stayed float (an op the quantizer left alone)."""
    import onnx

    model = onnx.load(str(model_path))
    initializers = {i.name for i in model.graph.initializer}
    found = {}
    for layer in layers:
        if layer.weight is None:
            continue
        if layer.weight + WEIGHT_SUFFIX in initializers:
            found[layer.weight] = layer.weight + WEIGHT_SUFFIX
        elif layer.weight in initializers:
            found[layer.weight] = layer.weight
    return found


# ---- the gate ------------------------------------------------------------------------------

def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _probabilities(values: np.ndarray, kind: OutputKind) -> np.ndarray:
    """As the service reads the class output (service/models/scores.py), in float64."""
    scores = values.astype(np.float64)
    if kind is OutputKind.LOGITS:
        shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
        return out
    if kind is OutputKind.LOG_PROBABILITIES:
        return np.exp(scores)
    return scores


def evaluate(float_path: Path, int8_path: Path, images: Images, held_out: HeldOut, metadata: Metadata,
             progress: bool) -> Evaluation:
    """Both versions on the evaluation images, every output: agreement, accuracies, the
    largest probability difference and each output's error sums."""
    from tqdm import tqdm

    reference = _session(float_path)
    try:
        quantized = _session(int8_path)
    except Exception as exc:  # onnxruntime's own errors: a graph the quantizer wrote but it cannot run
        raise ExportError(f"the int8 graph onnxruntime's quantizer wrote for {float_path} does not load in "
                          f"onnxruntime ({_reason(exc)}); nothing was "
                          "written (a case this project does not handle yet: please report it with the model)") from None
    names = [metadata.output.name, *metadata.layer_names]
    input_name = metadata.input.name
    result = Evaluation(labelled=held_out.targets is not None)
    result.sums = {name: _Sums.empty(_channels(metadata, name)) for name in names}
    with tqdm(total=len(images), desc="comparing with float", unit="img", disable=not progress, file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar:
        for batch, targets in zip(images.batches, images.targets, strict=True):
            for chunk in _chunks(batch, metadata):
                a = reference.run(names, {input_name: chunk})
                b = quantized.run(names, {input_name: chunk})
                _tally(result, names, a, b, metadata.output.kind,
                       None if targets is None else targets[: len(chunk)])
                targets = None if targets is None else targets[len(chunk):]
                bar.update(len(chunk))
    return result


def _channels(metadata: Metadata, name: str) -> int:
    if name == metadata.output.name:
        return len(metadata.labels)
    return int(metadata.layer(name).output_shape[1])


def _chunks(batch: np.ndarray, metadata: Metadata) -> Iterator[np.ndarray]:
    """The batch in runs whose outputs (both versions) fit EVALUATION_BATCH_BYTES."""
    if metadata.input.fixed_batch:
        yield batch
        return
    per_image = 4 * sum(int(np.prod(layer.output_shape[1:])) for layer in metadata.layers) + 4 * len(metadata.labels)
    size = max(1, min(len(batch), EVALUATION_BATCH_BYTES // (2 * per_image)))
    for start in range(0, len(batch), size):
        yield batch[start:start + size]


def _tally(result: Evaluation, names: list[str], a: list[np.ndarray], b: list[np.ndarray], kind: OutputKind,
           targets: np.ndarray | None) -> None:
    top_a, top_b = a[0].argmax(axis=1), b[0].argmax(axis=1)
    result.images += len(top_a)
    result.same += int((top_a == top_b).sum())
    if targets is not None:
        result.float_correct += int((top_a == targets).sum())
        result.int8_correct += int((top_b == targets).sum())
    difference = np.abs(_probabilities(a[0], kind) - _probabilities(b[0], kind)).max()
    result.max_probability_difference = max(result.max_probability_difference, float(difference))
    for name, x, y in zip(names, a, b, strict=True):
        result.sums[name].add(x, y)


def images_to_judge(min_agreement: float) -> int:
    """The fewest evaluation images that can show ``min_agreement``: with fewer, a single
    image that disagrees is already more than the gate allows, so the gate would pass only
    where every image agrees and say nothing of how often int8 disagrees (8 of 8 is "1.0",
    and as likely from a version that disagrees once in 20 as from one that never does).
    1 (no floor) for no gate (0) and for a gate of 1, which asks for every image whatever
    their number."""
    if not 0 < min_agreement < 1:
        return 1
    return math.ceil(round(1 / (1 - min_agreement), 9))


def _check_judgeable(evaluation: int, calibration: int, held_out: HeldOut, opts: QuantizeOptions,
                     sizes: SplitSizes, name: str, version: int) -> None:
    """QuantizeRefused before anything is quantized where the images left to judge the int8
    version on cannot show ``opts.min_agreement``, saying what would."""
    needed = images_to_judge(opts.min_agreement)
    if evaluation >= needed:
        return
    total, description = len(held_out.images), held_out.description
    wants = [f"--evaluation-images {needed}"] if sizes.evaluation < needed else []
    enough = sizes.total_for(needed)
    if enough > total:
        wants.append(f"--data-dir with at least {enough} images the model did not learn from" if held_out.brought
                     else f"a model trained with at least {enough} held-out images (--max-val-samples)")
    more = " and ".join(wants)
    loosest = math.floor((1 - 1 / evaluation) * 1000) / 1000
    raise QuantizeRefused(
        f"the int8 version of {name} version {version} was not made: {evaluation} held-out image(s) are left to "
        f"judge it on ({description}: {total} image(s), {calibration} to calibrate on), and {evaluation} cannot "
        f"show a top-1 agreement of {opts.min_agreement}: one image that disagrees is already 1/{evaluation} of "
        f"them. Judging {opts.min_agreement} takes at least {needed} images: give {more}, or a --min-agreement "
        f"these images can judge ({loosest} or lower; 0 writes the int8 version unjudged)"
    )


def _gate(measured: Evaluation, metadata: Metadata, version: int, opts: QuantizeOptions,
          attempts: Sequence[QuantizeAttempt] = ()) -> None:
    if measured.agreement >= opts.min_agreement:
        return
    tried = ""
    if len(attempts) > 1:
        tried = "; with " + ", ".join(f"{a.float_layers} layer(s) kept float32 {a.agreement:.4f}" for a in attempts[1:])
    accuracy = ""
    if measured.labelled:
        accuracy = (f"; accuracy float {measured.accuracy(measured.float_correct):.4f}, "
                    f"int8 {measured.accuracy(measured.int8_correct):.4f}")
    worst = sorted((row for row in measured.layers(metadata) if row.sqnr_db is not None),
                   key=lambda row: row.sqnr_db or 0.0)[:3]
    layers = ", ".join(f"{row.name} {row.sqnr_db:.1f} dB" for row in worst)
    others = ", ".join(f"--method {m.value}" for m in CalibrationMethod if m is not opts.method)
    raise QuantizeRefused(
        f"the int8 version of {metadata.name} version {version} was not written: its top-1 class agrees with the "
        f"float version's on {measured.same} of {measured.images} held-out images ({measured.agreement:.4f}), "
        f"below --min-agreement {opts.min_agreement}{accuracy}{tried}; largest probability difference "
        f"{measured.max_probability_difference:.3g}; lowest SQNR: {layers or 'none'}. Try {others}, more "
        "--calibration-images, a larger --max-float-layers, or, if that agreement is good enough for you, a lower "
        "--min-agreement"
    )


# ---- speed, views, metadata ----------------------------------------------------------------

def _logits_only(path: Path, output: str) -> bytes:
    """The graph with its class output alone, as the service's fast path runs it."""
    import onnx

    from service.models.runtime import class_output_only

    model = onnx.load(str(path))
    class_output_only(model, output)
    data: bytes = model.SerializeToString()
    return data


def time_versions(float_path: Path, int8_path: Path, spec: InputSpec, fixed_batch: int | None,
                  output: str = "logits", runs: int = SPEED_RUNS) -> list[SpeedRecord]:
    """Median seconds of a logits-only run of each version at each batch size, on this CPU."""
    import onnxruntime as ort

    batches = (fixed_batch,) if fixed_batch else SPEED_BATCHES
    sessions = []
    for path in (float_path, int8_path):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions.append(ort.InferenceSession(_logits_only(path, output), options,
                                             providers=["CPUExecutionProvider"]))
    input_name = sessions[0].get_inputs()[0].name
    records = []
    for size in batches:
        image = np.random.default_rng(0).normal(size=(size, spec.channels, *spec.size)).astype(np.float32)
        seconds = []
        for session in sessions:
            session.run(None, {input_name: image})
            times = []
            for _ in range(runs):
                begun = time.perf_counter()
                session.run(None, {input_name: image})
                times.append(time.perf_counter() - begun)
            seconds.append(float(np.median(times)))
        records.append(SpeedRecord(batch=size, float_seconds=round(seconds[0], 6), int8_seconds=round(seconds[1], 6)))
    return records


def _copy_initial_weights(source: Source, directory: Path, weights: dict[str, str]) -> None:
    """initial_weights.npz again, keyed by the int8 version's kernel initializers."""
    path = source.directory / INITIAL_WEIGHTS_FILE
    if INITIAL_WEIGHTS_FILE not in source.metadata.files or not path.is_file():
        return
    with np.load(path, allow_pickle=False) as data:
        arrays = {weights[key]: data[key] for key in data.files if key in weights}
    if arrays:
        np.savez(directory / INITIAL_WEIGHTS_FILE, allow_pickle=False, **arrays)


def _views(source: Source, directory: Path, model_path: Path, layers: list[Layer], spec: InputSpec,
           held_out: HeldOut, progress: bool) -> channel_view.Stored:
    """The channel view ranked again through the int8 graph (so a stored picture posted back
    gives the recorded activation), over as many images as the float version's; samples."""
    record = source.metadata.channel_view
    seed = source.metadata.training.seed if source.metadata.training and source.metadata.training.seed else 0
    options = channel_view.ViewOptions(images=record.images if record is not None else 0,
                                       top_k=record.top_k if record is not None else channel_view.DEFAULT_TOP_K,
                                       progress=progress, seed=seed)
    return channel_view.write_views(directory, model_path, layers, spec, held_out.images, held_out.classes, options)


def _opset(path: Path) -> int | None:
    import onnx

    return opset_of(onnx.load(str(path), load_external_data=False))


def int8_metadata(source: Metadata, version: int, files: dict[str, Any], layers: list[Layer],
                  record: QuantizationRecord, views: channel_view.Stored, opset: int | None,
                  explained: ExplanationsRecord | None = None) -> Metadata:
    """The float version's metadata, as the int8 version's: same labels, input, output and
    layers (their kernels now int8 initializers), its own files, views and record."""
    from .staging import utc_now

    versions = package_versions(opset, with_torch=False)
    if source.versions is not None:
        versions = versions.model_copy(update={"torch": source.versions.torch,
                                               "torchvision": source.versions.torchvision})
    description = (f"int8 (static QDQ, {record.method.value} calibration) of version {record.quantized_from}: "
                   f"{source.description or source.arch or ''}").rstrip(": ")
    document = source.model_copy(update={
        "version": version, "created": utc_now(), "description": description, "layers": layers,
        "parity": None, "versions": versions, "channel_view": views.channel_view, "samples": views.samples,
        "precision": Precision.INT8, "quantization": record, "files": files, "explanations": explained,
    })
    return Metadata.model_validate(document.to_json())
