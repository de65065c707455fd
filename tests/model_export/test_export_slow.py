"""Slow tier: real Fashion-MNIST training and AlexNet at 224 px.

Run by `make test` (skipped, saying why, when the Fashion-MNIST files are absent);
`pytest -m "not slow"` leaves them out. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from artifact import read_metadata, verify_files
from model_export.architectures import REGISTRY
from model_export.datasets import FASHION_MNIST_DIR
from tests.support.export_cli import ALEXNET_RECEPTIVE_FIELDS, check_contract, run_cli

pytestmark = pytest.mark.slow
needs_fashion = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST idx files not found in {FASHION_MNIST_DIR} (Debian package dataset-fashion-mnist)",
)


@needs_fashion
def test_tinyvgg_on_fashion_mnist(tmp_path: Path) -> None:
    result = run_cli(
        ["--out", tmp_path, "--dataset", "fashion-mnist", "--epochs", "3", "--batch-size", "64", "--quiet"]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    training = meta["training"]
    print(
        f"\ntinyvgg fashion-mnist: {training['epochs']} epochs, accuracy {training['accuracy']:.4f}, "
        f"{training['seconds']:.1f} s, parity {max(meta['parity']['max_abs_diff'].values()):.2e}"
    )
    assert (training["train_size"], training["val_size"]) == (60000, 10000)
    assert training["accuracy"] >= 0.87
    assert meta["labels"][9] == "Ankle boot"
    # The channel view: 1000 held-out images by default, whole 28 px pictures, bounded.
    assert meta["channel_view"]["images"] == 1000 and meta["channel_view"]["pictures"]["crop"] == 0
    assert meta["files"]["channel_view.npz"]["bytes"] < 1 << 20
    assert meta["samples"]["count"] == 30
    # Its int8 version passes the gate on the held-out split, accuracy within half a point.
    quantized = run_cli(["quantize", result.written.parent, "--quiet"])
    assert quantized.rc == 0, quantized.stderr
    int8 = read_metadata(quantized.written)
    verify_files(quantized.written, int8)
    assert int8.quantization is not None
    record = int8.quantization.to_json()
    print(f"int8: agreement {record['agreement']:.4f} on {record['evaluation_images']}, accuracy "
          f"{record['float_accuracy']:.4f} / {record['int8_accuracy']:.4f}")
    assert record["agreement"] >= 0.99 and abs(record["float_accuracy"] - record["int8_accuracy"]) <= 0.005


@needs_fashion
def test_alexnet_at_224_on_a_fashion_mnist_subset(tmp_path: Path) -> None:
    result = run_cli(
        [
            "--out",
            tmp_path,
            "--arch",
            "alexnet",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "1",
            "--max-train-samples",
            "256",
            "--max-val-samples",
            "64",
            "--parity-images",
            "16",
            "--quiet",
        ]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert meta["input"]["shape"] == [-1, 3, 224, 224] and meta["input"]["color_mode"] == "RGB"
    # Grey images replicated to RGB: the three measured channel means are equal.
    assert len(set(meta["input"]["mean"])) == 1
    layers = {layer["name"]: layer for layer in meta["layers"]}
    assert {n: (layers[n]["receptive_field"], layers[n]["stride"]) for n in ALEXNET_RECEPTIVE_FIELDS} == ALEXNET_RECEPTIVE_FIELDS
    assert 0.955 < meta["params"]["dense_fraction"] < 0.97
    # 224 px: crops for the shallow layers (rf 11, 19, 51 <= 56), whole images deeper.
    view = meta["channel_view"]
    assert view["images"] == 64 and view["pictures"]["crop"] > 0 and 0 < view["pictures"]["whole"] <= 64
    assert meta["files"]["channel_view.npz"]["bytes"] < 8 << 20
    print(f"\nalexnet 224 parity: {json.dumps(meta['parity']['max_abs_diff'])}")


def test_alexnet_with_an_imagenet_checkpoint(tmp_path: Path) -> None:
    """A 1000-class torchvision AlexNet state dict (random here: no downloads in tests)."""
    torch.manual_seed(1)
    torch.save(
        REGISTRY["alexnet"].builder(3, (224, 224), 1000).state_dict(), tmp_path / "alexnet-imagenet.pth"
    )
    result = run_cli(
        [
            "--out",
            tmp_path / "models",
            "--arch",
            "alexnet",
            "--weights",
            tmp_path / "alexnet-imagenet.pth",
            "--parity-images",
            "8",
            "--quiet",
        ]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert len(meta["labels"]) == 1000 and meta["labels"][:2] == ["tench", "goldfish"]
    assert meta["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["input"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["input"]["size"] == [224, 224] and meta["output"]["shape"] == [-1, 1000]
    assert meta["params"]["total"] == 61_100_840
    assert meta["training"]["epochs"] == 0 and meta["training"]["accuracy"] is None
    # Initial kernels are the seeded random init, not the checkpoint's.
    initial = np.load(result.written / "initial_weights.npz")
    assert set(initial.files) == {layer["weight"] for layer in meta["layers"] if layer["kind"] == "conv"}
    # Fine-tuning a 1000-class head on 10-class digits is refused, clearly.
    refused = run_cli(
        [
            "--out",
            tmp_path / "models2",
            "--arch",
            "alexnet",
            "--weights",
            tmp_path / "alexnet-imagenet.pth",
            "--epochs",
            "1",
            "--quiet",
        ]
    )
    assert refused.rc == 2 and "ImageNet checkpoint" in refused.stderr and refused.stderr.count("\n") == 1
    assert not (tmp_path / "models2").exists()
