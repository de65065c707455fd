"""The architecture registry: name -> builder, default input size/channels, description.

Adding an architecture is one `ArchSpec` entry in `REGISTRY`. Builders return modules
whose `named_modules()` paths (`features.0`, `classifier.1`, ...) are the layer names
users see in the service, so every net is built from named `nn.Sequential` blocks.

torch is imported inside the builders only: the CLI reads this registry for `--help`
and argument checks, and importing torch there would cost seconds for nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn

# (channels, (height, width), num_classes) -> module
Builder = Callable[[int, tuple[int, int], int], "nn.Module"]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Builder
    size: tuple[int, int]  # default input [H, W]
    channels: int  # default input channels (1 -> "L", 3 -> "RGB")
    description: str
    # Layers tapped when --layers is not given; None = the generic rule in layers.py
    # (each conv's activation, each pool, the last spatial layer).
    default_layers: tuple[str, ...] | None = None
    # Module path components that are not on the main path (receptive fields and
    # default taps follow the main path only, e.g. ResNet's 1x1 shortcut convs).
    side_paths: tuple[str, ...] = ()
    # torchvision weights enum whose offline metadata gives ImageNet labels when a
    # --weights checkpoint has a 1000-class head.
    imagenet_weights: str | None = None
    smallest: int = 8  # smallest input side the net accepts (checked before building)


def _flat_size(features: nn.Module, channels: int, size: tuple[int, int]) -> int:
    """Number of features after `features` for one input: sizes the first dense layer."""
    import torch

    with torch.no_grad():
        return int(features(torch.zeros(1, channels, *size)).numel())


def _named(**blocks: nn.Module) -> nn.Module:
    """A container whose children are named blocks run in order (paths `features.0`...)."""
    from torch import nn

    return nn.Sequential(OrderedDict(blocks))


def build_tinyvgg(channels: int, size: tuple[int, int], num_classes: int) -> nn.Module:
    # CNN Explainer's TinyVGG: two blocks of conv-relu-conv-relu-maxpool with 10 3x3
    # filters, then one linear layer. Padding 1 keeps small inputs (28 px) usable.
    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(channels, 10, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(10, 10, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(_flat_size(features, channels, size), num_classes))
    return _named(features=features, classifier=classifier)


def build_lenet(channels: int, size: tuple[int, int], num_classes: int) -> nn.Module:
    # LeNet-5 with the modern ReLU + max-pool choice (the original used tanh and
    # subsampling); padding 2 on the first conv makes 28 px behave like LeCun's 32 px.
    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Linear(_flat_size(features, channels, size), 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return _named(features=features, classifier=classifier)


def build_alexnet(channels: int, size: tuple[int, int], num_classes: int) -> nn.Module:
    # torchvision's AlexNet unchanged (so ImageNet checkpoints load), except the first
    # conv when the input is not RGB.
    import torchvision
    from torch import nn

    net = torchvision.models.alexnet(weights=None, num_classes=num_classes)
    if channels != 3:
        old = net.features[0]
        net.features[0] = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    return cast("nn.Module", net)  # torchvision has no type information


def build_alexnet_small(channels: int, size: tuple[int, int], num_classes: int) -> nn.Module:
    # AlexNet's shape (5 conv, 3 max-pool, 3 dense, dropout before the first two dense
    # layers, same module indices as torchvision) scaled to 28-64 px inputs: 3x3
    # stride-1 convs and 2x2 pools instead of 11x11/4 and 3x3/2, narrower layers.
    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(channels, 48, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(48, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 192, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(192, 192, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(192, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(_flat_size(features, channels, size), 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
    return _named(features=features, classifier=classifier)


def build_resnet18(channels: int, size: tuple[int, int], num_classes: int) -> nn.Module:
    import torchvision
    from torch import nn

    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return cast("nn.Module", net)


REGISTRY: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in [
        ArchSpec(
            "tinyvgg",
            build_tinyvgg,
            (28, 28),
            1,
            "TinyVGG (CNN Explainer): 2 x (conv-relu-conv-relu-maxpool), 10 3x3 filters, linear",
        ),
        ArchSpec(
            "lenet",
            build_lenet,
            (28, 28),
            1,
            "LeNet-5: conv5-relu-pool, conv5-relu-pool, 3 dense layers",
        ),
        ArchSpec(
            "alexnet",
            build_alexnet,
            (224, 224),
            3,
            "AlexNet (torchvision): 5 conv, 3 max-pool, 3 dense layers, 224 px RGB",
            imagenet_weights="AlexNet_Weights",
            smallest=63,
        ),
        ArchSpec(
            "alexnet-small",
            build_alexnet_small,
            (32, 32),
            3,
            "AlexNet's shape (5 conv, 3 max-pool, 3 dense) scaled down for 28-64 px inputs",
            smallest=8,
        ),
        ArchSpec(
            "resnet18",
            build_resnet18,
            (224, 224),
            3,
            "ResNet-18 (torchvision): 7x7 stem, 4 stages of 2 basic residual blocks",
            default_layers=("relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"),
            side_paths=("downsample",),
            imagenet_weights="ResNet18_Weights",
            smallest=32,
        ),
    ]
}


def get_arch(name: str) -> ArchSpec:
    from .errors import ExportError

    try:
        return REGISTRY[name]
    except KeyError:
        raise ExportError(f"unknown architecture {name!r}; choose from: {', '.join(REGISTRY)}") from None


def imagenet_labels(spec: ArchSpec) -> list[str] | None:
    """ImageNet class names from torchvision's bundled weights metadata (no download)."""
    if spec.imagenet_weights is None:
        return None
    import torchvision

    weights = getattr(torchvision.models, spec.imagenet_weights).IMAGENET1K_V1
    return list(weights.meta["categories"])
