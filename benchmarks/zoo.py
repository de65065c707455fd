"""The zoo: real torchvision CNNs as users bring them, for the import tests and docs/models.md.

Each architecture (torchvision's own code, `weights=None`, nothing downloaded) is trained
on Fashion-MNIST (Debian's dataset-fashion-mnist; scikit-learn's digits where it is absent)
upscaled to 64 px RGB, then exported the ways users export. Two budgets: the tests' brief
one (`Arch.steps`, seconds: a net that runs and tells classes apart), and
`Arch.budget(learned=True)` (1-4 minutes: held-out accuracy 73-83%) for what measures the nets'
answers, explanations (benchmarks/explain_zoo.py) and int8 agreement (benchmarks/quantize.py).
The ways:

- both torch.onnx exporters at two opsets each: TorchScript (`dynamo=False`) at 11 and 17,
  dynamo at 18 and 23, with a dynamic batch;
- variants made from those with onnx.helper: `softmax` (a Softmax appended to dynamo@18's
  scores), `nhwc` (TorchScript@11 taking NHWC images through a Transpose, as tf2onnx
  writes), `float16` (dynamo@23 with float16 weights, input and output); and `batch1`, the
  fixed batch of 1 both exporters write when not told otherwise (TorchScript@17 exported
  without dynamic axes: its Reshape targets then spell out the batch, which an edit of a
  dynamic file would not).

Everything is cached in ``cache_dir``: trained weights per architecture (so a test session
trains each once), exported files per entry, and a small labelled held-out ImageFolder.
Use ``build(arch, exporter, opset, variant, cache_dir[, learned])``, ``trained(arch, cache_dir[, learned])``,
``heldout(cache_dir)``; ``ENTRIES`` lists the zoo, ``QUICK`` the part `make test` runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = 1  # bump when training or export changes: cached files carry it in their names
SIZE = 64
CLASSES = 10
BATCH = 32
SEED = 0
LOGITS = "logits"


def _flat(net: Any, x: Any) -> Any:
    import torch

    return torch.flatten(x, 1)


@dataclass(frozen=True)
class Arch:
    """A torchvision architecture, its training budget, and its head: the part after the
    last spatial layer, as a function of that layer's map (the autograd reference)."""

    name: str
    steps: int
    head: Callable[[Any, Any], Any]
    lr: float = 1e-3
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Steps to a net that has learned (0: ten times ``steps``). The tests need a net that runs
    # and tells classes apart (seconds of training); what measures the nets' answers
    # (explanations, int8 agreement) needs one that has learned: at ``steps`` most held-out
    # accuracies are 17-69% and the maps of such a net explain little (benchmarks/README.md).
    learned: int = 0
    learned_lr: float = 0.0  # 0: ``lr``

    def budget(self, learned: bool) -> Arch:
        """This architecture with the tests' budget, or the learned one."""
        if not learned:
            return self
        return replace(self, steps=self.learned or 10 * self.steps, lr=self.learned_lr or self.lr)

    def build(self) -> Any:
        import torchvision

        builder = getattr(torchvision.models, self.name)
        return builder(weights=None, num_classes=CLASSES, **self.kwargs)


def _pooled(head_name: str) -> Callable[[Any, Any], Any]:
    def head(net: Any, x: Any) -> Any:
        import torch

        return getattr(net, head_name)(torch.flatten(net.avgpool(x), 1))

    return head


def _densenet_head(net: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F

    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _squeezenet_head(net: Any, x: Any) -> Any:
    import torch

    return torch.flatten(net.classifier[3](x), 1)


def _shufflenet_head(net: Any, x: Any) -> Any:
    return net.fc(x.mean([2, 3]))


def _convnext_head(net: Any, x: Any) -> Any:
    return net.classifier(net.avgpool(x))


ARCHS: dict[str, Arch] = {a.name: a for a in [
    # Steps of 32 images: seconds to a minute each on an idle 2-core machine (docs/models.md).
    Arch("resnet18", 20, _pooled("fc"), lr=2e-3),
    Arch("mobilenet_v3_small", 40, _pooled("classifier"), lr=2e-3),
    Arch("efficientnet_b0", 25, _pooled("classifier"), lr=2e-3),
    Arch("densenet121", 10, _densenet_head, lr=2e-3, learned=300),  # 69% held-out at 100 steps, 83% at 300
    # At lr 1e-3 SqueezeNet stalls near 55% held-out (800 or 3200 steps); at 3e-4, 79% at 800.
    Arch("squeezenet1_1", 80, _squeezenet_head, lr=1e-3, learned=800, learned_lr=3e-4),
    Arch("googlenet", 16, _pooled("fc"), lr=2e-3, kwargs={"aux_logits": False, "init_weights": True}),
    Arch("shufflenet_v2_x0_5", 40, _shufflenet_head, lr=2e-3),
    Arch("regnet_x_400mf", 40, _pooled("fc"), lr=2e-3),
    Arch("convnext_tiny", 20, _convnext_head, lr=1e-3),
]}
EXPORTS: tuple[tuple[str, int], ...] = (("torchscript", 11), ("torchscript", 17), ("dynamo", 18), ("dynamo", 23))
# Each variant, and the export it is made from.
VARIANTS: dict[str, tuple[str, int]] = {
    "softmax": ("dynamo", 18),
    "batch1": ("torchscript", 17),
    "nhwc": ("torchscript", 11),
    "float16": ("dynamo", 23),
}


@dataclass(frozen=True)
class Entry:
    """One file of the zoo."""

    arch: str
    exporter: str
    opset: int
    variant: str = "plain"

    @property
    def name(self) -> str:
        """A model name: resnet18-ts17, resnet18-dynamo18-softmax, ..."""
        short = "ts" if self.exporter == "torchscript" else "dynamo"
        tail = "" if self.variant == "plain" else f"-{self.variant}"
        return f"{self.arch.replace('_', '-')}-{short}{self.opset}{tail}"

    @property
    def id(self) -> str:
        return self.name

    @property
    def nhwc(self) -> bool:
        return self.variant == "nhwc"

    @property
    def float16(self) -> bool:
        return self.variant == "float16"

    @property
    def kind(self) -> str:
        """The output kind the import should find."""
        return "probabilities" if self.variant == "softmax" else "logits"

    def feed(self, images: np.ndarray) -> np.ndarray:
        """NCHW float32 images as this file takes them."""
        x = images.transpose(0, 2, 3, 1) if self.nhwc else images
        return np.ascontiguousarray(x.astype(np.float16 if self.float16 else np.float32))


ENTRIES: list[Entry] = [
    *[Entry(arch, exporter, opset) for arch in ARCHS for exporter, opset in EXPORTS],
    *[Entry(arch, *VARIANTS[variant], variant) for arch in ARCHS for variant in VARIANTS],
]
QUICK: list[Entry] = [
    Entry("resnet18", "torchscript", 17),
    Entry("mobilenet_v3_small", "dynamo", 18),
    Entry("resnet18", "dynamo", 18, "softmax"),
    Entry("mobilenet_v3_small", "torchscript", 17, "batch1"),
    Entry("resnet18", "torchscript", 11, "nhwc"),
    Entry("mobilenet_v3_small", "dynamo", 23, "float16"),
]


# --- data ------------------------------------------------------------------------------

@dataclass
class Data:
    name: str
    classes: list[str]
    mean: float
    std: float
    train_images: np.ndarray  # uint8 N x H x W
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@cache
def data() -> Data:
    """Fashion-MNIST where Debian's package is installed, else scikit-learn's digits."""
    from model_export.datasets import FASHION_MNIST_DIR, load_digits, load_fashion_mnist

    if FASHION_MNIST_DIR.is_dir():
        ds = load_fashion_mnist(None)
    else:
        ds = load_digits(SEED)
    train, test = ds.train, ds.val
    assert isinstance(train.images, np.ndarray) and isinstance(test.images, np.ndarray)
    pixels = train.images[:5000].astype(np.float64) / 255
    return Data(ds.name, list(ds.classes), float(pixels.mean()), float(pixels.std()),
                train.images, train.labels, test.images, test.labels)


def normalisation() -> tuple[list[float], list[float]]:
    """--mean/--std for an import of a zoo model: the statistics it was trained with."""
    d = data()
    return [d.mean] * 3, [d.std] * 3


def _tensors(images: np.ndarray) -> Any:
    """uint8 N x H x W -> float N x 3 x SIZE x SIZE, normalised as the service does."""
    import torch
    import torch.nn.functional as F

    d = data()
    x = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return ((x - d.mean) / d.std).expand(-1, 3, -1, -1).contiguous()


def heldout(cache_dir: Path, per_class: int = 4) -> Path:
    """A labelled held-out ImageFolder (<class>/<n>.png, native size, grey) of the test split."""
    from PIL import Image

    d = data()
    root = Path(cache_dir) / f"heldout-{d.name}-{per_class}"
    if root.is_dir():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    for index, label in enumerate(d.classes):
        folder = tmp / label.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(np.flatnonzero(d.test_labels == index)[:per_class]):
            Image.fromarray(d.test_images[i]).save(folder / f"{n}.png")
    os.replace(tmp, root)
    return root


# --- training --------------------------------------------------------------------------

def _key(arch: str, learned: bool = False) -> str:
    import torch

    spec = ARCHS[arch].budget(learned)
    return f"{arch}-{data().name}-{spec.steps}x{BATCH}-lr{spec.lr:g}-r{RECIPE}-torch{torch.__version__.split('+')[0]}"


def trained(arch: str, cache_dir: Path, learned: bool = False) -> Any:
    """The architecture with its weights trained for the tests' brief budget or until it has
    learned (trained once, then cached), eval mode."""
    import torch

    path = Path(cache_dir) / "weights" / f"{_key(arch, learned)}.pt"
    net = ARCHS[arch].build()
    if path.is_file():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()
    record = _train(ARCHS[arch].budget(learned), net)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    path.with_suffix(".json").write_text(json.dumps(record))
    return net.eval()


def training_record(arch: str, cache_dir: Path, learned: bool = False) -> dict[str, Any]:
    """Steps, seconds and held-out accuracy of the cached training run."""
    path = Path(cache_dir) / "weights" / f"{_key(arch, learned)}.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _train(spec: Arch, net: Any) -> dict[str, Any]:
    import torch

    d = data()
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(d.train_labels))[: spec.steps * BATCH]
    images, labels = _tensors(d.train_images[order]), torch.from_numpy(d.train_labels[order])
    optimiser = torch.optim.AdamW(net.parameters(), lr=spec.lr)
    start = time.monotonic()
    net.train()
    for step in range(spec.steps):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        loss = torch.nn.functional.cross_entropy(net(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    _recalibrate(net, images)
    seconds = time.monotonic() - start
    net.eval()
    test = rng.permutation(len(d.test_labels))[:500]
    with torch.no_grad():
        predicted = torch.cat([net(_tensors(d.test_images[test[i:i + 100]])).argmax(1) for i in range(0, 500, 100)])
    accuracy = float((predicted.numpy() == d.test_labels[test]).mean())
    return {"arch": spec.name, "dataset": d.name, "steps": spec.steps, "batch": BATCH, "seconds": round(seconds, 1),
            "accuracy": accuracy}


def _recalibrate(net: Any, images: Any, batches: int = 4) -> None:
    """Batch-norm statistics averaged over a few batches of the trained net: after so few
    steps the running averages (momentum 0.01 in MobileNetV3) are still near their start."""
    import torch

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    with torch.no_grad():
        for i in range(batches):
            net(images[i * BATCH:(i + 1) * BATCH])


# --- export ----------------------------------------------------------------------------

def build(arch: str, exporter: str, opset: int, variant: str, cache_dir: Path, learned: bool = False) -> Path:
    """The zoo file for (arch, exporter, opset, variant), trained for the tests' budget or
    until it has learned, built once and cached."""
    entry = Entry(arch, exporter, opset, variant)
    path = Path(cache_dir) / "onnx" / f"{_key(arch, learned)}" / f"{entry.name}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    if variant == "plain":
        _export(trained(arch, cache_dir, learned), exporter, opset, tmp, dynamic=True)
    elif variant == "batch1":
        _export(trained(arch, cache_dir, learned), exporter, opset, tmp, dynamic=False)
    else:
        import onnx

        base = onnx.load(str(build(arch, exporter, opset, "plain", cache_dir, learned)))
        onnx.save(MAKERS[variant](base), str(tmp))
    os.replace(tmp, path)
    return path


def _export(net: Any, exporter: str, opset: int, path: Path, dynamic: bool) -> None:
    import torch

    example = torch.zeros(2 if dynamic else 1, 3, SIZE, SIZE)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input": {0: "batch"}, LOGITS: {0: "batch"}} if dynamic else None
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=[LOGITS], dynamic_axes=axes)
        else:
            program = _exported_program(net, dynamic)
            torch.onnx.export(program, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=["input"], output_names=[LOGITS], external_data=False)


_PROGRAMS: dict[tuple[int, bool], Any] = {}


def _exported_program(net: Any, dynamic: bool) -> Any:
    """torch.export's program of the net, traced once per net for both dynamo opsets."""
    import torch

    key = (id(net), dynamic)
    if key not in _PROGRAMS:
        example = torch.zeros(2 if dynamic else 1, 3, SIZE, SIZE)
        shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
        _PROGRAMS.clear()  # one net at a time: the programs hold its weights
        _PROGRAMS[key] = torch.export.export(net, (example,), dynamic_shapes=shapes)
    return _PROGRAMS[key]


# --- variants (onnx.helper edits of an export) ---------------------------------------------

def with_softmax(model: Any) -> Any:
    """The scores turned into probabilities by a Softmax appended to the graph."""
    import onnx

    out = model.graph.output[0]
    probs = onnx.helper.make_node("Softmax", [out.name], ["probabilities"], axis=-1 if _opset(model) >= 13 else 1,
                                  name="appended_softmax")
    model.graph.node.append(probs)
    vi = onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", CLASSES])
    model.graph.output.remove(out)
    model.graph.output.append(vi)
    return model


def with_nhwc_input(model: Any) -> Any:
    """An NHWC input `input_1` and a Transpose to the NCHW value the graph reads, as tf2onnx writes."""
    import onnx

    graph = model.graph
    old = graph.input[0]
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    graph.input.remove(old)
    graph.input.insert(0, onnx.helper.make_tensor_value_info("input_1", onnx.TensorProto.FLOAT,
                                                             [dims[0], dims[2], dims[3], dims[1]]))
    graph.node.insert(0, onnx.helper.make_node("Transpose", ["input_1"], [old.name], perm=[0, 3, 1, 2],
                                               name="Transpose__nhwc"))
    return model


def to_float16(model: Any) -> Any:
    """Every float32 tensor float16: weights, constants, casts, the input and the outputs."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == onnx.TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            if node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.FLOAT16
    for vi in [*graph.input, *graph.output]:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    del graph.value_info[:]
    return model


MAKERS: dict[str, Callable[[Any], Any]] = {"softmax": with_softmax, "nhwc": with_nhwc_input, "float16": to_float16}


def _opset(model: Any) -> int:
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
