"""ONNX files made elsewhere, as a user brings them: small nets exported by torch.onnx."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn


class _Small(nn.Module):
    """Conv-BN-ReLU-pool, a strided conv, global average pool, a head + softmax."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.head(torch.flatten(self.body(x), 1))
        return scores, torch.softmax(scores, 1)


def export_small(path: Path, channels: int = 3, classes: int = 5, size: int = 20) -> nn.Module:
    """A fixed-batch (batch 1) ONNX file with a non-standard input name and two outputs."""
    torch.manual_seed(0)
    net = _Small(channels, classes).eval()
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
        torch.onnx.export(
            net,
            (torch.randn(1, channels, size, size),),
            str(path),
            dynamo=True,
            external_data=False,
            input_names=["image"],
            output_names=["scores", "probs"],
        )
    return net
