"""graph_geometry on torchvision's networks as torch.onnx writes them.

Known answers: the theoretical receptive fields in "Computing Receptive Fields of
Convolutional Neural Networks" (Araujo, Norris, Sim; Distill 2019, doi:10.23915/distill.00021),
table "receptive field parameters of modern networks" (r, effective stride S, effective
padding P: unit 0 starts at pixel -P, so our receptive_field_offset is -P), and for the
intermediate end-points the table the article links, google-research/receptive_field
RECEPTIVE_FIELD_TABLE.md (TF-Slim models at 224 px). Their models are TF-Slim's; where
torchvision's differ, the difference is built into a copy of the torchvision net and
the copy then gives the paper's numbers exactly.

The zoo: nine architectures at 64 px, both exporters; every value computed from the
image has a field (a map's, or the whole image with the op that mixed the positions
named), and every unit's box is the pixels that really change it (geometry_check).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

from model_export.graph_geometry import Field, receptive_fields
from tests.support.geometry_check import assert_exact, observe

# (r, S, P) per end-point at 224 px, from the sources above; the last of each net is the
# Distill table's row (alexnet_v2 195/32/64, vgg_16 212/32/90, resnet_v1_50 483/32/239).
DISTILL_ALEXNET_V2 = {"conv1": (11, 4, 0), "pool1": (19, 8, 0), "conv2": (51, 8, 16), "conv3": (99, 16, 32),
                      "conv4": (131, 16, 48), "conv5": (163, 16, 64), "pool5": (195, 32, 64)}  # fmt: skip
DISTILL_VGG_16 = {"conv1_1": (3, 1, 1), "pool1": (6, 2, 2), "conv2_1": (10, 2, 4), "pool2": (16, 4, 6),
                  "conv3_1": (24, 4, 10), "conv3_2": (32, 4, 14), "pool3": (44, 8, 18), "conv4_1": (60, 8, 26),
                  "conv4_2": (76, 8, 34), "pool4": (100, 16, 42), "conv5_1": (132, 16, 58),
                  "conv5_2": (164, 16, 74), "pool5": (212, 32, 90)}  # fmt: skip
DISTILL_RESNET_V1_50 = {"block1": (35, 8, 15), "block2": (99, 16, 47), "block3": (291, 32, 143),
                        "block4": (483, 32, 239)}  # fmt: skip
# TF-Slim end-point -> the torchvision module whose output it is (features.i: after the ReLU).
ALEXNET_POINTS = {"conv1": 1, "pool1": 2, "conv2": 4, "conv3": 7, "conv4": 9, "conv5": 11, "pool5": 12}
VGG_POINTS = {"conv1_1": 1, "pool1": 4, "conv2_1": 6, "pool2": 9, "conv3_1": 11, "conv3_2": 13, "pool3": 16,
              "conv4_1": 18, "conv4_2": 20, "pool4": 23, "conv5_1": 25, "conv5_2": 27, "pool5": 30}  # fmt: skip
RESNET_POINTS = {"block1": "layer1", "block2": "layer2", "block3": "layer3", "block4": "layer4"}

ZOO = [
    "resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "squeezenet1_1", "googlenet",
    "shufflenet_v2_x0_5", "regnet_x_400mf", "convnext_tiny",
]  # fmt: skip
ZOO_SIZE = (64, 64)


class Stages(nn.Module):
    """A net cut into named stages run in order, each stage's output a graph output of
    that name (the end-points), so the exported graph names them whatever the exporter."""

    def __init__(self, stages: dict[str, nn.Module]) -> None:
        super().__init__()
        self.names = list(stages)
        self.stages = nn.ModuleList(stages.values())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


def features(net: nn.Module, points: dict[str, int]) -> Stages:
    """AlexNet/VGG: every module of `features`, the end-points named."""
    names = {index: name for name, index in points.items()}
    return Stages({names.get(i, f"features.{i}"): m for i, m in enumerate(net.features)})


def resnet(net: torchvision.models.ResNet) -> Stages:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = {"stem": stem, **{point: getattr(net, layer) for point, layer in RESNET_POINTS.items()}}
    return Stages(stages)


def slim_alexnet_v2(net: torchvision.models.AlexNet) -> torchvision.models.AlexNet:
    """TF-Slim's alexnet_v2 convolves its conv1 'VALID': no padding (torchvision's pads 2)."""
    net.features[0].padding = (0, 0)
    return net


def slim_resnet_v1_50(net: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """TF-Slim's resnet_v1_50: each of blocks 1-3 subsamples in its last unit (3x3 conv
    stride 2, shortcut max_pool 1x1/2), torchvision's layers 2-4 in their first; and its
    3x3/2 max pool pads 'SAME', the one padded row after the image (torchvision's: one
    before and after)."""
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv2.stride = (1, 1)
        layer[0].downsample[0].stride = (1, 1)
    for layer in (net.layer1, net.layer2, net.layer3):
        layer[-1].conv2.stride = (2, 2)
        layer[-1].downsample = nn.MaxPool2d(1, stride=2)
    net.maxpool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, stride=2))
    return net


def export(net: nn.Module, size: tuple[int, int], dynamo: bool, path: Path, params: bool = True) -> onnx.ModelProto:
    outputs = getattr(net, "names", None)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporters' own deprecation and tracer notices
        torch.onnx.export(
            net.eval(), (torch.zeros(1, 3, *size),), str(path), dynamo=dynamo, external_data=False,
            export_params=params, input_names=["input"], output_names=outputs,
            **({} if dynamo else {"opset_version": 17}),
        )  # fmt: skip
    return onnx.load(str(path))


def distill(fields: dict[str, Field], points: dict[str, object]) -> dict[str, tuple[int, int, int]]:
    """(r, S, P) of each end-point, P = -offset as the paper counts it."""
    result = {}
    for point in points:
        g = fields[point].geometry
        assert g.receptive_field is not None and g.stride is not None and g.offset is not None
        result[point] = (g.receptive_field, g.stride, -g.offset)
    return result


def build(name: str) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet's notice about init_weights; random init is not needed
        extra: dict[str, bool] = {"init_weights": False} if name in ("googlenet", "vgg16") else {}
        extra |= {"aux_logits": False} if name == "googlenet" else {}
        return getattr(torchvision.models, name)(weights=None, **extra).eval()


def fields_224(net: nn.Module, dynamo: bool, path: Path) -> dict[str, Field]:
    # The torchscript exporter can leave the weights out (graph inputs then: a small file,
    # the same geometry); the dynamo exporter would drop Pad's constants with them.
    return receptive_fields(export(net, (224, 224), dynamo, path, params=dynamo), "input")


def vgg16_against_distill(dynamo: bool, tmp: Path) -> None:
    """torchvision's VGG-16 is TF-Slim's vgg_16, and so are the fields, end-point by end-point."""
    fields = fields_224(features(build("vgg16"), VGG_POINTS), dynamo, tmp / "vgg16.onnx")
    assert distill(fields, VGG_POINTS) == DISTILL_VGG_16


def alexnet_against_distill(dynamo: bool, tmp: Path) -> None:
    """The same kernels and strides as alexnet_v2, so r and S agree; torchvision's conv1
    pads 2 pixels (alexnet_v2's is unpadded), so every unit starts 2 pixels further out:
    P + 2. Without that padding, the paper's numbers exactly."""
    fields = fields_224(features(build("alexnet"), ALEXNET_POINTS), dynamo, tmp / "alexnet.onnx")
    assert distill(fields, ALEXNET_POINTS) == {p: (r, s, pad + 2) for p, (r, s, pad) in DISTILL_ALEXNET_V2.items()}
    slim = fields_224(features(slim_alexnet_v2(build("alexnet")), ALEXNET_POINTS), dynamo, tmp / "alexnet_v2.onnx")
    assert distill(slim, ALEXNET_POINTS) == DISTILL_ALEXNET_V2


def resnet50_against_distill(dynamo: bool, tmp: Path) -> None:
    """torchvision subsamples at the first bottleneck of layers 2-4, TF-Slim's resnet_v1_50
    at the last unit of blocks 1-3, so in Slim's more units work on the coarser grid:
    block1 has stride 8 there, 4 here, and the fields grow faster (block4: 483 vs 427
    pixels). The max pool's padding (a row before here, after there) adds 2 to P. Moved
    to where Slim has them (slim_resnet_v1_50), the paper's numbers exactly."""
    fields = fields_224(resnet(build("resnet50")), dynamo, tmp / "resnet50.onnx")
    ours = {"block1": (35, 4, 17), "block2": (91, 8, 45), "block3": (267, 16, 133), "block4": (427, 32, 213)}
    assert distill(fields, RESNET_POINTS) == ours
    slim = fields_224(resnet(slim_resnet_v1_50(build("resnet50"))), dynamo, tmp / "resnet_v1_50.onnx")
    assert distill(slim, RESNET_POINTS) == DISTILL_RESNET_V1_50


KNOWN = {"vgg16": vgg16_against_distill, "alexnet": alexnet_against_distill, "resnet50": resnet50_against_distill}


@pytest.mark.parametrize("net", KNOWN)
def test_known_answers_from_the_distill_article(net: str, tmp_path: Path) -> None:
    KNOWN[net](False, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("net", KNOWN)
def test_known_answers_through_the_dynamo_exporter(net: str, tmp_path: Path) -> None:
    KNOWN[net](True, tmp_path)


def positive(net: nn.Module, seed: int = 0) -> nn.Module:
    """Weights for the brute force (geometry_check): every conv and linear weight positive,
    about the mean of its inputs; biases zero; normalisations the identity; layer scales 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            for name, param in module.named_parameters(recurse=False):
                if name == "bias":
                    param.zero_()
                elif isinstance(module, (nn.Conv2d, nn.Linear)):
                    param.copy_((0.5 + torch.rand(param.shape, generator=generator)) / param[0].numel())
                else:
                    param.fill_(1.0)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return net.eval()


def check_zoo(name: str, dynamo: bool, tmp: Path, report: Callable[[str], None]) -> None:
    model = export(positive(build(name)), ZOO_SIZE, dynamo, tmp / f"{name}.onnx")
    fields = receptive_fields(model, "input")
    shapes = _shapes(model, list(fields))
    maps = {n for n, f in fields.items() if f.axes is not None}
    for value, field in fields.items():
        assert field.geometry.receptive_field is not None, f"{name}: {value} has no field: {field.note}"
        if value in maps:
            assert field.geometry.axes is not None, f"{name}: {value}"
        else:  # whole image: the op that mixed or folded the positions is named, and no map is left
            assert field.geometry == fields[next(iter(f for f in fields if f not in maps))].geometry
            assert "not a map" in str(field.note), f"{name}: {value}: {field.note}"
            assert sum(d > 1 for d in shapes[value][1:]) <= 1, f"{name}: {value} {shapes[value]} is still a map"
    # 1e4: the faint edge of a deep field must still move a sigmoid gate in float32
    units = assert_exact(observe(model, fields, ZOO_SIZE, 3, lines=True, magnitude=1e4))
    four = [v for v in fields if len(shapes[v]) == 4]
    report(
        f"{name} ({'dynamo' if dynamo else 'torchscript'}): {len(fields)} values from the image, "
        f"{len(four)} of them 4-D: {sum(v in maps for v in four)} maps with a field, "
        f"{sum(v not in maps for v in four)} whole-image ({', '.join(sorted({str(fields[v].note) for v in four if v not in maps}))}); "
        f"{units} units' boxes exact"
    )


def _shapes(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple[int, ...]]:
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    listed = {o.name for o in tapped.graph.output}
    tapped.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in listed)
    session = ort.InferenceSession(tapped.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, *ZOO_SIZE), np.float32)
    return {n: tuple(v.shape) for n, v in zip(names, session.run(names, {"input": image}))}


def test_a_squeeze_excite_net_from_torchvision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_zoo("mobilenet_v3_small", dynamo=False, tmp=tmp_path, report=print)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ZOO)
def test_the_zoo(name: str, dynamo: bool, tmp_path: Path) -> None:
    check_zoo(name, dynamo, tmp_path, report=print)
