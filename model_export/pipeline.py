"""The train-and-export run: data -> net -> training -> ONNX -> parity -> artifact."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from artifact import INITIAL_WEIGHTS_FILE, MODEL_FILE, EpochRecord, Layer, Params, Parity, Training

from . import channel_view, explanations, metadata
from .architectures import ArchSpec, get_arch, imagenet_labels
from .datasets import Dataset, limit, load_dataset
from .errors import ExportError
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    check_channels,
    measure_mean_std,
    normalisation,
    preprocess,
)
from .staging import Staging, check_name, choose_version

DEFAULT_EPOCHS = 10  # tinyvgg on digits: ~97% held-out in ~3 s on 2 cores
IMAGENET_CLASSES = 1000

if TYPE_CHECKING:  # torch is imported when a run starts, not for --help
    from torch import nn


@dataclass
class TrainOptions:
    arch: str = "tinyvgg"
    dataset: str = "digits"
    data_dir: str | None = None
    out: str = "models"
    name: str | None = None
    version: int | None = None
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or 0 with --weights
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    size: tuple[int, int] | None = None
    channels: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    layers: list[str] | None = None
    weights: str | None = None
    tolerance: float = 1e-3
    parity_images: int = 32
    progress: bool = True
    threads: int | None = None
    channel_images: int | None = None  # None: channel_view.default_images(size); 0: no view
    channel_top_k: int = channel_view.DEFAULT_TOP_K
    explain_images: int = explanations.MeasureOptions.images  # 0: do not measure explanations
    explain_seconds: float = explanations.MeasureOptions.seconds


def _load_weights(path: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise ExportError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a checkpoint"
        raise ExportError(
            f"cannot read weights file {path}: not a PyTorch state dict ({type(exc).__name__})"
        ) from None
    # Training scripts often wrap the state dict; accept the usual wrappers.
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"weights file {path} does not hold a state dict of tensors")
    # DataParallel checkpoints prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _head_outputs(net: Any, state: dict[str, Any]) -> int | None:
    """Output count of the checkpoint's last dense layer (the class head)."""
    from torch import nn

    linears = [path for path, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears or f"{linears[-1]}.weight" not in state:
        return None
    return int(state[f"{linears[-1]}.weight"].shape[0])


def _fit_weights(net: Any, state: dict[str, Any], path: str, arch: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {list(state[k].shape)} vs {list(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch (file vs arch): {'; '.join(mismatched[:3])}")
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"
        )
    if problems:
        raise ExportError(f"weights file {path} does not fit arch {arch!r}: {'; '.join(problems)}")
    net.load_state_dict(state)


def _input_spec(
    opts: TrainOptions, spec: ArchSpec, data: Dataset, channels: int, size: tuple[int, int], imagenet: bool
) -> InputSpec:
    mean = normalisation(opts.mean, channels, "mean")
    std = normalisation(opts.std, channels, "std")
    if imagenet and channels == 3:
        # An ImageNet checkpoint expects ImageNet statistics, not the dataset's.
        mean = mean or IMAGENET_MEAN
        std = std or IMAGENET_STD
    if mean is None or std is None:
        measured_mean, measured_std = measure_mean_std(data.train.images, channels, size, opts.seed)
        mean = mean or measured_mean
        std = std or measured_std
    return InputSpec(channels=channels, size=size, mean=tuple(mean), std=tuple(std))


@dataclass
class _Plan:
    """What the run builds, settled before any net exists: labels, input, epochs."""

    labels: list[str]
    channels: int
    size: tuple[int, int]
    epochs: int
    state: dict[str, Any] | None  # --weights, loaded
    imagenet: bool  # a 1000-class ImageNet checkpoint keeps its own labels


@dataclass
class _Net:
    """The net with its taps, their metadata, and its conv kernels at initialisation."""

    module: nn.Module
    taps: list[str]
    layers: list[Layer]
    convs: dict[str, nn.Conv2d]  # conv module path -> the conv behind a tapped layer
    initial: dict[str, np.ndarray]  # conv module path -> kernel before training/--weights
    params: Params  # metadata `params`


def export_trained(opts: TrainOptions) -> Path:
    """Run the whole export; returns the new version's directory."""
    spec = get_arch(opts.arch)
    name = _check_options(opts)
    data = _load_data(opts)
    plan = _plan(opts, spec, data)
    input_spec = _input_spec(opts, spec, data, plan.channels, plan.size, plan.imagenet)
    net = _build_net(opts, spec, plan)
    training = _train(opts, net, data, input_spec, plan)
    with Staging(Path(opts.out), name, opts.version) as staging:
        assert staging.path is not None
        model_path = staging.path / MODEL_FILE
        opset = _write_model(net, plan, model_path)
        _write_initial_weights(net, staging.path)
        parity_images = preprocess(data.val.images[: opts.parity_images], input_spec)
        parity = _check_parity(net, model_path, parity_images, opts)
        options = channel_view.ViewOptions(opts.channel_images, opts.channel_top_k, opts.progress, opts.seed)
        views = channel_view.write_views(
            staging.path, model_path, net.layers, input_spec, data.val, data.classes, options
        )
        facts = metadata.ModelFacts(
            name=name,
            arch=spec.name,
            description=_describe(spec, opts, plan.epochs, plan.imagenet),
            labels=plan.labels,
            input=input_spec,
            input_name="input",
            output_name="logits",
            layers=net.layers,
            params=net.params,
            parity=parity,
            opset=opset,
            training=training,
            views=views,
        )
        measuring = explanations.MeasureOptions(opts.explain_images, opts.explain_seconds, opts.progress, opts.seed)
        facts.explanations = explanations.measure(model_path, metadata.provisional(facts), data.val, input_spec,
                                                  measuring)
        return staging.commit(lambda version, files: metadata.build(facts, version, files))


def _check_options(opts: TrainOptions) -> str:
    """Every option that can be wrong, checked before minutes of training; the name."""
    name = check_name(opts.name or f"{opts.dataset}-{opts.arch}")
    if opts.version is not None:
        choose_version(Path(opts.out) / name, opts.version)  # fail before training, not after
    if opts.weights is not None and not os.path.isfile(opts.weights):
        raise ExportError(f"weights file {opts.weights} does not exist")
    for value, flag in ((opts.batch_size, "--batch-size"), (opts.parity_images, "--parity-images")):
        if value < 1:
            raise ExportError(f"{flag} must be at least 1")
    if opts.epochs is not None and opts.epochs < 0:
        raise ExportError("--epochs must be 0 or more")
    if not opts.tolerance > 0:
        raise ExportError("--tolerance must be positive")
    channel_view.check_options(opts.channel_images, opts.channel_top_k)
    explanations.check_options(opts.explain_images, opts.explain_seconds)
    return name


def _load_data(opts: TrainOptions) -> Dataset:
    data = load_dataset(opts.dataset, opts.data_dir, opts.seed)
    data.train = limit(data.train, opts.max_train_samples, opts.seed)
    data.val = limit(data.val, opts.max_val_samples, opts.seed)
    if len(data.train) == 0 or len(data.val) == 0:
        raise ExportError("the dataset needs at least one training and one held-out image")
    return data


def _plan(opts: TrainOptions, spec: ArchSpec, data: Dataset) -> _Plan:
    """Labels, input shape and epochs, from the options, the data and --weights."""
    state = _load_weights(opts.weights) if opts.weights else None
    labels = list(data.classes)
    channels = opts.channels or spec.channels
    size = opts.size or spec.size
    imagenet = False
    if state is not None:
        probe = spec.builder(channels, size if min(size) >= spec.smallest else spec.size, len(labels))
        head = _head_outputs(probe, state)
        if head == IMAGENET_CLASSES and len(labels) != IMAGENET_CLASSES and spec.imagenet_weights:
            imagenet = True
            labels = imagenet_labels(spec) or [f"class_{i}" for i in range(head)]
            channels = opts.channels or 3
            size = opts.size or (224, 224)
    check_channels(channels)
    if min(size) < spec.smallest:
        raise ExportError(
            f"arch {spec.name} needs inputs of at least {spec.smallest} px, got {size[0]}x{size[1]}"
        )
    epochs = opts.epochs if opts.epochs is not None else (0 if state is not None else DEFAULT_EPOCHS)
    if imagenet and epochs > 0:
        raise ExportError(
            f"{opts.weights} is an ImageNet checkpoint (1000 classes) and {opts.dataset} has "
            f"{len(data.classes)}: fine-tuning it is not supported; export it with --epochs 0"
        )
    return _Plan(labels, channels, size, epochs, state, imagenet)


def _build_net(opts: TrainOptions, spec: ArchSpec, plan: _Plan) -> _Net:
    """The seeded net, its taps and their metadata; --weights loaded into it."""
    import torch

    from . import layers as L
    from .training import seed_everything

    seed_everything(opts.seed)
    module = L.prepare(spec.builder(plan.channels, plan.size, len(plan.labels)))
    module.eval()
    calls = L.trace(module, torch.zeros(1, plan.channels, *plan.size), spec.side_paths)
    taps = L.resolve_taps(calls, opts.layers or list(spec.default_layers or L.default_taps(calls)))
    layer_meta = L.describe_taps(module, calls, taps, plan.size)
    modules = dict(module.named_modules())
    convs = {entry.conv: modules[entry.conv] for entry in layer_meta if entry.conv}
    # Kernels at initialisation, before training or --weights: "filters before/after".
    initial = {path: m.weight.detach().numpy().copy() for path, m in convs.items()}
    if plan.state is not None:
        _fit_weights(module, plan.state, opts.weights or "", spec.name)
    return _Net(module, taps, layer_meta, convs, initial, L.param_summary(module))


def _train(
    opts: TrainOptions, net: _Net, data: Dataset, input_spec: InputSpec, plan: _Plan
) -> Training:
    """Train (or only evaluate a loaded checkpoint); returns metadata `training`."""
    from .training import as_torch_dataset, default_threads, deterministic, evaluate, train

    train_set = as_torch_dataset(data.train, input_spec)
    val_set = as_torch_dataset(data.val, input_spec)
    threads = opts.threads or default_threads(plan.size)
    with deterministic(threads):
        result = train(
            net.module,
            train_set,
            val_set,
            epochs=plan.epochs,
            batch_size=opts.batch_size,
            lr=opts.lr,
            seed=opts.seed,
            progress=opts.progress,
        )
    net.module.eval()
    if plan.epochs == 0 and plan.state is not None and not plan.imagenet:
        # A loaded checkpoint for these labels is a trained net: report how it does.
        result.loss, result.accuracy = evaluate(net.module, val_set)
    return Training(
        dataset=data.name,
        train_size=len(data.train),
        val_size=len(data.val),
        epochs=plan.epochs,
        batch_size=opts.batch_size,
        lr=opts.lr,
        seed=opts.seed,
        threads=threads,
        seconds=result.seconds,
        accuracy=result.accuracy,
        loss=result.loss,
        history=[EpochRecord.model_validate(epoch) for epoch in result.history],
        weights=str(opts.weights) if opts.weights else None,
    )


def _write_model(net: _Net, plan: _Plan, model_path: Path) -> int:
    """model.onnx, and each conv layer's `weight`: the initializer its kernels are in."""
    import onnx

    from .onnx_export import conv_weight_names, export_onnx

    opset = export_onnx(net.module, net.taps, (plan.channels, *plan.size), model_path)
    weight_names = conv_weight_names(model_path, net.convs)
    net.layers = [entry.model_copy(update={"weight": weight_names.get(entry.conv) if entry.conv else None})
                  for entry in net.layers]
    return metadata.opset_of(onnx.load(str(model_path), load_external_data=False)) or opset


def _write_initial_weights(net: _Net, directory: Path) -> None:
    """initial_weights.npz: the kernels before training, keyed as in model.onnx."""
    by_conv = {entry.conv: entry.weight for entry in net.layers if entry.conv and entry.weight}
    arrays = {by_conv[path]: kernel for path, kernel in net.initial.items() if path in by_conv}
    if arrays:
        # numpy's stubs type **kwds as its allow_pickle flag; the keys are array names.
        np.savez(directory / INITIAL_WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]


def _check_parity(net: _Net, model_path: Path, images: np.ndarray, opts: TrainOptions) -> Parity:
    """PyTorch eager vs onnxruntime on held-out images, every output; raises if off."""
    import torch

    from .onnx_export import TapModel
    from .parity import check_dynamic_batch, compare, run_onnx

    with torch.no_grad():
        eager = TapModel(net.module, net.taps).eval()(torch.from_numpy(images))
    reference = {n: t.numpy() for n, t in zip(["logits", *net.taps], eager, strict=False)}
    check_dynamic_batch(model_path, images)
    return compare(reference, run_onnx(model_path, images), opts.tolerance, len(images))


def _describe(spec: ArchSpec, opts: TrainOptions, epochs: int, imagenet: bool) -> str:
    if imagenet:
        return f"{spec.description}; ImageNet weights from {os.path.basename(opts.weights or '')}"
    if epochs == 0:
        source = (
            f"weights from {os.path.basename(opts.weights)}" if opts.weights else "untrained (random weights)"
        )
        return f"{spec.description}; {source}"
    return f"{spec.description}; trained on {opts.dataset} for {epochs} epoch(s)"
