"""Bad input: one `error: ...` line on stderr, exit status 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model_export.architectures import REGISTRY
from tests.support.export_cli import make_imagefolder, run_cli, tree


def _one_folder(tmp: Path) -> list[str]:
    return [
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(make_imagefolder(tmp / "one", classes=("only",), per_class=3)),
    ]


def _broken_image(tmp: Path) -> list[str]:
    root = make_imagefolder(tmp / "broken", per_class=3)
    (root / "horizontal" / "zz.png").write_bytes(b"garbage")
    return ["--dataset", "imagefolder", "--data-dir", str(root)]


def _lenet_weights(tmp: Path) -> list[str]:
    torch.save(REGISTRY["lenet"].builder(1, (28, 28), 10).state_dict(), tmp / "lenet.pt")
    return ["--weights", str(tmp / "lenet.pt")]


def _rgb_weights(tmp: Path) -> list[str]:
    torch.save(REGISTRY["tinyvgg"].builder(3, (28, 28), 10).state_dict(), tmp / "rgb.pt")
    return ["--weights", str(tmp / "rgb.pt")]


def _garbage_weights(tmp: Path) -> list[str]:
    (tmp / "w.pt").write_bytes(b"not a checkpoint")
    return ["--weights", str(tmp / "w.pt")]


def _not_onnx(tmp: Path) -> list[str]:
    (tmp / "x.onnx").write_text("hello")
    return ["import", str(tmp / "x.onnx"), "--name", "x"]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "unknown arch": (lambda t: ["--arch", "vgg99"], "argument --arch: invalid choice: 'vgg99'"),
    "unknown dataset": (lambda t: ["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    "unknown option": (lambda t: ["--epoch", "3"], "unrecognized arguments"),
    "bad number": (lambda t: ["--epochs", "many"], "argument --epochs: invalid int value"),
    "negative epochs": (lambda t: ["--epochs", "-1"], "--epochs must be 0 or more"),
    "missing fashion dir": (
        lambda t: ["--dataset", "fashion-mnist", "--data-dir", str(t / "nope")],
        "does not exist",
    ),
    "missing imagefolder dir": (
        lambda t: ["--dataset", "imagefolder", "--data-dir", str(t / "nope")],
        "does not exist",
    ),
    "imagefolder without dir": (lambda t: ["--dataset", "imagefolder"], "needs --data-dir"),
    "one class": (_one_folder, "at least two class subfolders"),
    "unreadable image": (_broken_image, "cannot read image"),
    "weights of another arch": (_lenet_weights, "does not fit arch 'tinyvgg'"),
    "weights with other channels": (
        _rgb_weights,
        "shape mismatch (file vs arch): features.0.weight [10, 3, 3, 3] vs [10, 1, 3, 3]",
    ),
    "weights not a checkpoint": (_garbage_weights, "not a PyTorch state dict"),
    "weights missing": (lambda t: ["--weights", str(t / "absent.pt")], "does not exist"),
    "unknown layer": (
        lambda t: ["--layers", "features.1,features.99"],
        "unknown layer(s) features.99; valid layers: features.0",
    ),
    "bad name": (lambda t: ["--name", "My Model"], "invalid model name"),
    "mean count": (
        lambda t: ["--arch", "alexnet-small", "--mean", "0.1", "0.2"],
        "--mean needs 1 or 3 values",
    ),
    "size too small": (
        lambda t: ["--arch", "alexnet", "--size", "32", "32"],
        "needs inputs of at least 63 px",
    ),
    "onnx not onnx": (_not_onnx, "is not an ONNX model"),
    "onnx missing": (lambda t: ["import", str(t / "none.onnx"), "--name", "x"], "does not exist"),
    "import without name": (lambda t: ["import", "x.onnx"], "the following arguments are required: --name"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    make_args, message = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args = make_args(inputs)
    out = tmp_path / "models"
    extra = ["--out", str(out)] + (
        ["--quiet", "--epochs", "1"] if args[:1] != ["import"] and "--epochs" not in args else []
    )
    if "--weights" in args:
        extra = ["--out", str(out), "--quiet"]
    result = run_cli([*args, *extra])
    assert result.rc == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert tree(out) == []


def test_parity_failure_fails_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model_export.parity as parity

    real = parity.run_onnx

    def off_by_a_bit(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        outputs = real(*args, **kwargs)  # type: ignore[arg-type]
        outputs["features.4"] = outputs["features.4"] + 0.01
        return outputs

    monkeypatch.setattr(parity, "run_onnx", off_by_a_bit)
    out = tmp_path / "models"
    result = run_cli(["--out", out, "--epochs", "0", "--quiet"])
    assert result.rc == 2
    assert result.stderr.startswith(
        "error: parity check failed against PyTorch: features.4 (max abs diff 0.01"
    )
    assert result.stderr.count("\n") == 1
    assert tree(out) == []


def test_help_exits_0() -> None:
    result = run_cli(["--help"])
    assert result.rc == 0 and "--max-train-samples" in result.stdout and "import" in result.stdout
    result = run_cli(["import", "--help"])
    assert result.rc == 0 and "--labels" in result.stdout
