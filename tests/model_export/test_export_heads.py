"""Exact gradients on real heads: the service's numpy replay of the layers after a tapped
layer (service/explain/head.py) against PyTorch autograd, on graphs as torch.onnx writes
them with both exporters (dynamo and TorchScript).

Each case exports a network, finds the ONNX value that holds a module's output (by value:
the last one in graph order equal to the module's output for the same image), adds it as a
graph output as the importer does, describes the model as the service does, and compares
d score[target] / d layer with autograd's on the same activations: the score is the class
output, or the logit before a final Softmax / LogSoftmax / Sigmoid. Within 1e-4 of the
largest gradient.

The default tier covers every op with small nets and two torchvision heads; the slow tier
sweeps the torchvision classifiers (untrained, 64 px) with both exporters.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from onnx import helper
from torch import nn

from artifact import Metadata, OutputKind
from service.explain import Method, describe
from service.explain.head import GradHead

TOLERANCE = 1e-4
INPUT = "input"


@dataclass(frozen=True)
class Exporter:
    kind: str  # "dynamo" | "torchscript"
    opset: int
    optimize: bool = True  # dynamo's graph optimizer (its default); without it shapes stay computed

    def __str__(self) -> str:
        return f"{self.kind}-{self.opset}" + ("" if self.optimize else "-unoptimized")


DYNAMO = Exporter("dynamo", 18)
DYNAMO_20 = Exporter("dynamo", 20)  # the opset where Gelu is one op
DYNAMO_RAW = Exporter("dynamo", 18, optimize=False)  # reads x.size(0) off the graph input: Shape(input)
TORCHSCRIPT = Exporter("torchscript", 17)
TORCHSCRIPT_14 = Exporter("torchscript", 14)  # before LayerNormalization: written out as ReduceMean, Pow...


def export(net: nn.Module, exporter: Exporter, shape: tuple[int, int, int], output: str) -> onnx.ModelProto:
    """``net`` as ``exporter`` writes it, with a dynamic batch."""
    net = net.eval()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both exporters warn about things that do not matter here
        if exporter.kind == "dynamo":
            # Batch 2, not 1: torch.export specialises size-1 dimensions to constants.
            program = torch.export.export(net, (torch.zeros(2, *shape),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            onnx_program = torch.onnx.export(program, dynamo=True, input_names=[INPUT], output_names=[output],
                                             opset_version=exporter.opset, optimize=exporter.optimize)
            assert onnx_program is not None
            return onnx_program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(net, (torch.zeros(1, *shape),), buffer, dynamo=False, input_names=[INPUT],
                          output_names=[output], opset_version=exporter.opset,
                          dynamic_axes={INPUT: {0: "batch"}, output: {0: "batch"}})
        return onnx.load_from_string(buffer.getvalue())


def module_output(net: nn.Module, module: str, x: torch.Tensor) -> np.ndarray:
    seen: list[torch.Tensor] = []
    # a copy: an in-place activation after the module (DenseNet's F.relu(inplace=True)) would change it
    handle = dict(net.named_modules())[module].register_forward_hook(lambda _m, _a, out: seen.append(out.clone()))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return seen[0].numpy()


def tap(model: onnx.ModelProto, net: nn.Module, module: str, x: torch.Tensor) -> str:
    """Add the ONNX value holding ``module``'s output as a graph output; its name."""
    reference = module_output(net, module, x)
    outputs = {o.name for o in model.graph.output}
    candidates = [name for node in model.graph.node[-60:] for name in node.output if name and name not in outputs]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in candidates)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(candidates, {INPUT: x.numpy()})
    scale = max(1.0, float(np.abs(reference).max()))
    for name, value in reversed(list(zip(candidates, values))):
        if value.shape == reference.shape and np.allclose(value, reference, atol=1e-4 * scale):
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
            return name
    raise AssertionError(f"no value of the last 60 nodes holds {module}'s output")


def metadata(layers: dict[str, tuple[int, ...]], output: str, classes: int, kind: OutputKind, size: int) -> Metadata:
    return Metadata.model_validate({
        "schema_version": 1, "name": "zoo", "labels": [f"class {i}" for i in range(classes)],
        "input": {"name": INPUT, "channels": 3, "size": [size, size], "scale": 1 / 255,
                  "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "output": {"name": output, "shape": [-1, classes], "kind": kind.value},
        "layers": [{"name": name, "output_shape": [-1, *shape[1:]]} for name, shape in layers.items()],
        "files": {"model.onnx": {"sha256": "0" * 64}},
    })


@dataclass(frozen=True)
class Parity:
    module: str
    layer: str
    ops: tuple[str, ...]
    max_abs_diff: float
    max_gradient: float


def check(net: nn.Module, exporter: Exporter, modules: tuple[str, ...], *, size: int = 64,
          score_module: str | None = None, kind: OutputKind = OutputKind.LOGITS) -> list[Parity]:
    """Export, tap each of ``modules``, and compare the service's gradient at each with
    autograd's, for the top and the bottom class. ``score_module``: the module whose output
    is the score (the logits before a final softmax), when it is not the network's output."""
    net = net.eval()
    output = "logits" if kind is OutputKind.LOGITS else "scores"
    model = export(net, exporter, (3, size, size), output)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    layers = [tap(model, net, module, x) for module in modules]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values, *maps = session.run([output, *layers], {INPUT: x.numpy()})
    described = describe("zoo", metadata({n: a.shape for n, a in zip(layers, maps)}, output, values.shape[1], kind,
                                         size), model)
    found = []
    for module, layer, acts in zip(modules, layers, maps):
        head = described.heads.get(layer)
        assert isinstance(head, GradHead), f"{module} ({layer}) via {exporter}: {head}"
        assert layer in described.layers_for(Method.GRAD_CAM) and layer in described.layers_for(Method.HIRES_CAM)
        worst, peak = 0.0, 0.0
        for target in (int(values.argmax()), int(values.argmin())):
            torch_values, reference = autograd(net, module, score_module, acts, x, target)
            atol = 1e-4 * max(1.0, float(np.abs(values).max()))
            np.testing.assert_allclose(values, torch_values, rtol=1e-4, atol=atol)
            replayed, gradient = head.gradient(acts, target)
            np.testing.assert_allclose(replayed, values, rtol=1e-4, atol=atol)
            # A class whose path is all switched off (SqueezeNet's last ReLU, untrained) has a
            # zero gradient: the replay must give exactly zero there too.
            scale = float(np.abs(reference).max())
            diff = float(np.abs(gradient - reference).max())
            assert diff <= TOLERANCE * scale, f"{module} ({layer}) via {exporter}: |numpy - autograd| = {diff:.3g}"
            worst, peak = max(worst, diff), max(peak, scale)
        assert peak > 0, f"no target's score depends on {module}: a comparison that cannot fail"
        found.append(Parity(module, layer, head.ops, worst, peak))
    return found


def autograd(net: nn.Module, module: str, score_module: str | None, acts: np.ndarray, x: torch.Tensor,
             target: int) -> tuple[np.ndarray, np.ndarray]:
    """(the network's output, d score[0, target] / d module output) with the module's output
    set to ``acts`` (the ONNX model's activations), so everything after it is PyTorch's."""
    tensor = torch.from_numpy(acts.copy()).requires_grad_(True)
    modules = dict(net.named_modules())
    scores: list[torch.Tensor] = []
    # a copy of the leaf, so the in-place activations that follow (inplace=True) may write it
    handles = [modules[module].register_forward_hook(lambda _m, _a, _o: tensor.clone())]
    if score_module is not None:
        handles.append(modules[score_module].register_forward_hook(lambda _m, _a, out: scores.append(out)))
    try:
        out = net(x)
    finally:
        for handle in handles:
            handle.remove()
    score = scores[0] if scores else out
    score[0, target].backward()
    assert tensor.grad is not None
    return out.detach().numpy(), tensor.grad.numpy()


# ---- every op, on small nets ---------------------------------------------------------------

class LayerNorm2d(nn.LayerNorm):
    """ConvNeXt's: layer norm over the channels of an NCHW map, by permuting."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class View(nn.Module):
    """``x.view(x.size(0), -1)``: the batch size read at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class Mean(nn.Module):
    """ShuffleNet's ``x.mean([2, 3])``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


class ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class MeanHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2))


class Net(nn.Module):
    """conv (the tapped layer) -> ``head`` -> fc (the score) -> ``final``."""

    def __init__(self, head: list[nn.Module], features: int, final: nn.Module | None = None, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Sequential(*head)
        self.fc = nn.Linear(features, classes)
        self.final = final if final is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.fc(self.head(self.conv(x))))


def gap() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]


HEADS: dict[str, Callable[[], Net]] = {
    "relu6 + avg pool + view(x.size(0), -1)": lambda: Net([nn.ReLU6(), nn.AdaptiveAvgPool2d(2), View()], 32),
    "relu + torch.flatten": lambda: Net([nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()], 8 * 4 * 4),
    "hardswish + linear + hardswish + dropout (MobileNetV3)": lambda: Net(
        [nn.Hardswish(), *gap(), nn.Linear(8, 16), nn.Hardswish(), nn.Dropout(0.2)], 16),
    "silu + dropout (EfficientNet)": lambda: Net([nn.SiLU(), *gap(), nn.Dropout(0.2)], 8),
    "leaky relu + hardsigmoid + tanh": lambda: Net(
        [nn.LeakyReLU(0.1), *gap(), nn.Linear(8, 8), nn.Hardsigmoid(), nn.Linear(8, 8), nn.Tanh()], 8),
    "sigmoid + elu": lambda: Net([nn.Sigmoid(), *gap(), nn.Linear(8, 8), nn.ELU()], 8),
    "gelu (erf)": lambda: Net([nn.GELU(), *gap()], 8),
    "gelu (tanh)": lambda: Net([nn.GELU(approximate="tanh"), *gap()], 8),
    # a ReLU first: TorchScript folds a batch norm straight after the tapped conv into it
    "batch norm + relu + avg pool (DenseNet)": lambda: Net([nn.ReLU(), nn.BatchNorm2d(8), nn.ReLU(), *gap()], 8),
    "layer norm 2d (ConvNeXt)": lambda: Net([nn.AdaptiveAvgPool2d(1), LayerNorm2d(8, eps=1e-6), nn.Flatten()], 8),
    "batch norm 1d": lambda: Net([*gap(), nn.BatchNorm1d(8), nn.ReLU()], 8),
    "dropout + 1x1 conv + relu (SqueezeNet)": lambda: Net(
        [nn.Dropout(0.5), nn.Conv2d(8, 8, 1), nn.ReLU(), *gap()], 8),
    "mean([2, 3]) (ShuffleNet)": lambda: Net([nn.ReLU(), Mean()], 8),
    "linear on channels-last (MatMul + Add)": lambda: Net([ChannelsLast(), nn.Linear(8, 6), nn.GELU(), MeanHW()], 6),
}
# The heads whose ONNX form changes with the opset: also checked at a second one.
OPSET_SENSITIVE = [("gelu (erf)", DYNAMO_20), ("gelu (tanh)", DYNAMO_20), ("layer norm 2d (ConvNeXt)", TORCHSCRIPT_14),
                   ("linear on channels-last (MatMul + Add)", TORCHSCRIPT_14),
                   ("relu6 + avg pool + view(x.size(0), -1)", DYNAMO_RAW),
                   ("layer norm 2d (ConvNeXt)", DYNAMO_RAW)]

CASES = [(name, exporter) for name in HEADS for exporter in (TORCHSCRIPT, DYNAMO)] + OPSET_SENSITIVE


def randomise_statistics(net: nn.Module) -> nn.Module:
    """Batch norms with running statistics and affine weights that are not the identity."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)) and module.weight is not None:
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                assert module.bias is not None
                module.bias.normal_(0, 0.3, generator=generator)
                if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    assert module.running_mean is not None and module.running_var is not None
                    module.running_mean.normal_(0, 0.3, generator=generator)
                    module.running_var.uniform_(0.5, 2.0, generator=generator)
    return net


@pytest.mark.parametrize("name, exporter", CASES, ids=[f"{n} / {e}" for n, e in CASES])
def test_each_head_op_matches_autograd(name: str, exporter: Exporter) -> None:
    torch.manual_seed(0)
    (parity,) = check(randomise_statistics(HEADS[name]()), exporter, ("conv",), size=8)
    assert parity.ops[-1] == "Gemm" or parity.ops[-2:] == ("MatMul", "Add")


@pytest.mark.parametrize("final, kind", [(nn.Softmax(dim=1), OutputKind.PROBABILITIES),
                                         (nn.LogSoftmax(dim=1), OutputKind.LOG_PROBABILITIES),
                                         (nn.Sigmoid(), OutputKind.MULTILABEL)], ids=["softmax", "log-softmax", "sigmoid"])
@pytest.mark.parametrize("exporter", [TORCHSCRIPT, DYNAMO], ids=str)
def test_a_final_softmax_is_skipped_and_the_logit_before_it_differentiated(final: nn.Module, kind: OutputKind,
                                                                          exporter: Exporter) -> None:
    torch.manual_seed(0)
    net = Net([nn.ReLU(), *gap()], 8, final=final)
    (parity,) = check(net, exporter, ("conv",), size=8, score_module="fc", kind=kind)
    assert parity.ops[-1] == "Gemm"  # the final activation is replayed, never differentiated


# ---- torchvision's classifiers -------------------------------------------------------------

def torchvision_net(arch: str) -> nn.Module:
    extra = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    net: nn.Module = getattr(torchvision.models, arch)(weights=None, num_classes=10, **extra)
    return net


# arch -> the module whose output is the last spatial layer (and, for the heads that begin
# with an activation on the map, the module before it)
ZOO: dict[str, tuple[str, ...]] = {
    "resnet18": ("layer4",),
    "mobilenet_v3_small": ("features", "features.12.1"),
    "efficientnet_b0": ("features", "features.8.1"),
    "densenet121": ("features",),
    "convnext_tiny": ("features",),
    "squeezenet1_1": ("features",),
    "googlenet": ("inception5b",),
    "shufflenet_v2_x0_5": ("conv5",),
    "regnet_x_400mf": ("trunk_output",),
}
FAST = {("resnet18", "torchscript"), ("mobilenet_v3_small", "torchscript"), ("squeezenet1_1", "dynamo")}
SWEEP = [
    pytest.param(arch, exporter, id=f"{arch}-{exporter.kind}",
                 marks=() if (arch, exporter.kind) in FAST else (pytest.mark.slow,))
    for arch in ZOO for exporter in (TORCHSCRIPT, DYNAMO)
]


@pytest.mark.parametrize("arch, exporter", SWEEP)
def test_grad_cam_is_exact_on_the_last_spatial_layer_of_torchvision_classifiers(arch: str,
                                                                                exporter: Exporter) -> None:
    torch.manual_seed(0)
    check(randomise_statistics(torchvision_net(arch)), exporter, ZOO[arch])
