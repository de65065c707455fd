"""The registry, every architecture, and what layers.py derives from a net."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model_export import layers as L
from model_export.architectures import REGISTRY, ArchSpec, get_arch, imagenet_labels
from model_export.errors import ExportError
from tests.support.export_cli import ALEXNET_RECEPTIVE_FIELDS


def _traced(name: str, channels: int | None = None, size: tuple[int, int] | None = None):
    spec = REGISTRY[name]
    channels = channels or spec.channels
    size = size or spec.size
    torch.manual_seed(0)
    net = L.prepare(spec.builder(channels, size, 10)).eval()
    calls = L.trace(net, torch.zeros(1, channels, *size), spec.side_paths)
    taps = L.resolve_taps(calls, list(spec.default_layers or L.default_taps(calls)))
    return spec, net, calls, [layer.to_json() for layer in L.describe_taps(net, calls, taps, size)]


def test_registry_entries_are_complete() -> None:
    assert {"alexnet", "alexnet-small", "tinyvgg", "lenet", "resnet18"} <= set(REGISTRY)
    for key, spec in REGISTRY.items():
        assert isinstance(spec, ArchSpec) and spec.name == key
        assert spec.channels in (1, 3) and len(spec.size) == 2 and spec.description
    assert REGISTRY["alexnet"].size == (224, 224) and REGISTRY["alexnet"].channels == 3
    with pytest.raises(ExportError, match="unknown architecture 'vgg99'.*tinyvgg"):
        get_arch("vgg99")


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_arch_builds_and_runs_at_its_size(name: str, channels: int) -> None:
    spec = REGISTRY[name]
    net = spec.builder(channels, spec.size, 7).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, channels, *spec.size))
    assert out.shape == (2, 7)
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == channels


@pytest.mark.parametrize(
    "name,size",
    [("alexnet-small", (28, 28)), ("alexnet-small", (64, 64)), ("tinyvgg", (64, 64)), ("lenet", (32, 32))],
)
def test_small_nets_adapt_to_other_sizes(name: str, size: tuple[int, int]) -> None:
    net = REGISTRY[name].builder(3, size, 5).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, *size)).shape == (1, 5)


def test_alexnet_small_keeps_alexnets_shape() -> None:
    net = REGISTRY["alexnet-small"].builder(3, (32, 32), 10)
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(nn.Conv2d) == 5 and kinds.count(nn.MaxPool2d) == 3 and kinds.count(nn.Linear) == 3


def test_tinyvgg_is_cnn_explainers_net() -> None:
    _, net, _, layers = _traced("tinyvgg")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 10 and c.kernel_size == (3, 3) for c in convs)
    assert [m for m in net.modules() if isinstance(m, nn.Linear)][0].out_features == 10
    assert [layer["name"] for layer in layers] == [
        "features.1",
        "features.3",
        "features.4",
        "features.6",
        "features.8",
        "features.9",
    ]
    first = layers[0]
    assert (first["kind"], first["conv"], first["op"], first["params"]) == ("conv", "features.0", "ReLU", 100)
    assert first["output_shape"] == [-1, 10, 28, 28]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_param_counts_equal_pytorchs(name: str) -> None:
    spec = REGISTRY[name]
    net = spec.builder(spec.channels, spec.size, 10)
    params = L.param_summary(net).to_json()
    total = sum(p.numel() for p in net.parameters())
    assert params["total"] == total
    assert params["conv"] + params["dense"] + params["other"] == total
    assert sum(m["params"] for m in params["per_module"]) == total
    assert params["conv"] == sum(
        p.numel() for m in net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters()
    )
    assert params["dense"] == sum(
        p.numel() for m in net.modules() if isinstance(m, nn.Linear) for p in m.parameters()
    )


def test_alexnet_metadata_matches_the_known_numbers() -> None:
    _, net, _, layers = _traced("alexnet")
    by_name = {layer["name"]: layer for layer in layers}
    expected = ALEXNET_RECEPTIVE_FIELDS
    assert {n: (by_name[n]["receptive_field"], by_name[n]["stride"]) for n in expected} == expected
    assert [by_name[n]["kind"] for n in expected] == [
        "conv",
        "pool",
        "conv",
        "pool",
        "conv",
        "conv",
        "conv",
        "pool",
        "pool",
    ]
    assert by_name["features.1"]["kernel_size"] == [11, 11] and by_name["features.1"]["out_channels"] == 64
    assert by_name["features.12"]["output_shape"] == [-1, 256, 6, 6]
    params = L.param_summary(net).to_json()
    assert 0.955 < params["dense_fraction"] < 0.97  # "about 96% of the weights are dense"
    with_imagenet_head = L.param_summary(REGISTRY["alexnet"].builder(3, (224, 224), 1000))
    assert with_imagenet_head.total == 61_100_840  # torchvision's documented count


def test_resnet18_follows_the_main_path() -> None:
    _, _, _, layers = _traced("resnet18")
    by_name = {layer["name"]: layer for layer in layers}
    assert list(by_name) == ["relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    assert (by_name["relu"]["receptive_field"], by_name["relu"]["stride"]) == (7, 2)
    assert (by_name["maxpool"]["receptive_field"], by_name["maxpool"]["stride"]) == (11, 4)
    assert (by_name["layer4"]["receptive_field"], by_name["layer4"]["stride"]) == (
        435,
        32,
    )  # the published value
    assert by_name["layer4"]["conv"] == "layer4.1.conv2"


def test_resnet18_adapts_its_first_conv_for_grey_input() -> None:
    spec, net, _, _ = _traced("resnet18", channels=1, size=(64, 64))
    assert net.conv1.in_channels == 1 and spec.side_paths == ("downsample",)


def test_custom_taps_and_unknown_layers() -> None:
    _, net, calls, _ = _traced("tinyvgg")
    assert L.resolve_taps(calls, ["classifier.1", "features.0"]) == ["features.0", "classifier.1"]
    with pytest.raises(ExportError, match="unknown layer.*nope.*valid layers: features.0, features.1"):
        L.resolve_taps(calls, ["nope"])
    layers = [x.to_json() for x in L.describe_taps(net, calls, ["features.0", "classifier.0", "classifier.1"], (28, 28))]
    assert [(x["kind"], x["receptive_field"], x["stride"]) for x in layers] == [
        ("conv", 3, 1),
        ("other", 28, None),
        ("linear", 28, None),
    ]
    assert layers[2]["params"] == 490 * 10 + 10


def test_imagenet_labels_come_from_torchvision_offline() -> None:
    labels = imagenet_labels(REGISTRY["alexnet"])
    assert labels is not None and len(labels) == 1000 and labels[0] == "tench"
    assert imagenet_labels(REGISTRY["tinyvgg"]) is None
