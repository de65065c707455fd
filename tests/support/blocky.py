"""A small CNN with blocks, as the importer sees real ones: two residual blocks (an Add)
and a concatenating one (a Concat), exported by torch.onnx and imported, for the tests of
the explorer's block overview. Untrained: what the page shows does not depend on the weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

SIZE = 32
CLASSES = 3
PER_CLASS = 4


def export_blocky(path: Path) -> Path:
    """Writes the net as ONNX (TorchScript exporter, opset 17, dynamic batch)."""
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(x + self.conv2(self.relu(self.conv1(x))))

    class Mixed(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.narrow = nn.Conv2d(c, c, 1)
            self.wide = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.narrow(x), self.wide(x)], 1)

    class Blocky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.act = nn.ReLU()
            self.block1 = Residual(8)
            self.block2 = Residual(8)
            self.mixed = Mixed(8)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.mixed(self.block2(self.block1(self.act(self.stem(x)))))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(0)
    net = Blocky().eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation: users still export with it
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def image_folder(root: Path) -> Path:
    """A labelled ImageFolder: PER_CLASS random colour images of SIZE px per class, each class
    brighter in another channel."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(PER_CLASS):
            pixels = rng.integers(0, 160, (SIZE, SIZE, 3))
            pixels[..., c] += 90
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{n}.png")
    return root
