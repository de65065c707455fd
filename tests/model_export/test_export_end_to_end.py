"""The real CLI end to end: train, export, run the artifact the way the service will."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from model_export.architectures import REGISTRY
from tests.support.export_cli import check_contract, make_imagefolder, run_cli


def service_preprocess(images: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """What the service does from metadata `input`, written from the contract alone."""
    spec = meta["input"]
    h, w = spec["size"]
    out = []
    for image in images:
        pil = Image.fromarray(image).convert(spec["color_mode"]).resize((w, h), Image.BILINEAR)
        x = np.asarray(pil, dtype=np.float32)
        x = x[:, :, None] if x.ndim == 2 else x
        x = (x * np.float32(spec["scale"]) - np.asarray(spec["mean"], np.float32)) / np.asarray(
            spec["std"], np.float32
        )
        out.append(x.transpose(2, 0, 1))
    return np.stack(out)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])



def run_all(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": batch}), strict=False))


def test_digits_model_is_accurate_and_matches_the_contract(digits_artifact: Any) -> None:
    meta = check_contract(digits_artifact.path)
    assert meta["arch"] == "tinyvgg" and meta["labels"] == [str(i) for i in range(10)]
    assert meta["input"]["shape"] == [-1, 1, 28, 28] and meta["input"]["size"] == [28, 28]
    training = meta["training"]
    assert training["dataset"] == "digits" and training["accuracy"] >= 0.95
    assert len(training["history"]) == training["epochs"] >= 1
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(
        training["history"][0]
    )
    assert training["val_size"] == len(digits_artifact.labels)
    assert meta["parity"]["images"] == 32
    assert set(meta["parity"]["max_abs_diff"]) == {"logits", *[layer["name"] for layer in meta["layers"]]}
    assert max(meta["parity"]["max_abs_diff"].values()) < 1e-4

    # The service's view: preprocess from metadata, run the ONNX file, compare labels.
    batch = service_preprocess(digits_artifact.images, meta)
    outputs = run_all(digits_artifact.path / "model.onnx", batch)
    accuracy = float((outputs["logits"].argmax(1) == digits_artifact.labels).mean())
    assert accuracy == pytest.approx(training["accuracy"], abs=1e-9)
    for layer in meta["layers"]:
        assert list(outputs[layer["name"]].shape) == [len(batch), *layer["output_shape"][1:]]


def test_dynamic_batch_and_tapped_outputs(digits_artifact: Any) -> None:
    meta = digits_artifact.metadata
    batch = service_preprocess(digits_artifact.images[:7], meta)
    seven = run_all(digits_artifact.path / "model.onnx", batch)
    one = run_all(digits_artifact.path / "model.onnx", batch[:1])
    for name, value in seven.items():
        assert value.shape[0] == 7 and one[name].shape[0] == 1
        np.testing.assert_allclose(one[name][0], value[0], rtol=1e-5, atol=1e-5)
    # Tapped ReLU maps are non-negative; pools halve H and W.
    assert (seven["features.1"] >= 0).all()
    assert seven["features.4"].shape[2:] == (14, 14) and seven["features.9"].shape[2:] == (7, 7)


def test_conv_weights_are_real_initializers_and_initial_kernels_differ(digits_artifact: Any) -> None:
    meta = digits_artifact.metadata
    model = onnx.load(str(digits_artifact.path / "model.onnx"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    conv_layers = [layer for layer in meta["layers"] if layer["kind"] == "conv"]
    assert len(conv_layers) == 4
    initial = np.load(digits_artifact.path / "initial_weights.npz")
    assert sorted(initial.files) == sorted(layer["weight"] for layer in conv_layers)
    for layer in conv_layers:
        assert layer["weight"] in conv_weights
        kernel = inits[layer["weight"]]
        assert list(kernel.shape) == [layer["out_channels"], layer["in_channels"], *layer["kernel_size"]]
        assert initial[layer["weight"]].shape == kernel.shape
        assert not np.allclose(initial[layer["weight"]], kernel)  # training moved them
    assert meta["files"]["initial_weights.npz"]["bytes"] > 0
    params = meta["params"]
    assert params["total"] == params["conv"] + params["dense"] + params["other"]
    assert params["total"] == sum(
        int(np.prod(v.shape)) for k, v in inits.items() if k.endswith(("weight", "bias"))
    )


def test_parity_is_recomputed_within_tolerance(digits_artifact: Any) -> None:
    """Reload the exported net's weights into PyTorch and compare every output."""
    from model_export.onnx_export import TapModel

    meta = digits_artifact.metadata
    model = onnx.load(str(digits_artifact.path / "model.onnx"))
    state = {
        i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
        for i in model.graph.initializer
        if i.name.endswith(("weight", "bias"))
    }
    net = REGISTRY["tinyvgg"].builder(1, (28, 28), 10)
    net.load_state_dict(state)
    taps = [layer["name"] for layer in meta["layers"]]
    batch = service_preprocess(digits_artifact.images[:32], meta)
    with torch.no_grad():
        eager = TapModel(net.eval(), taps)(torch.from_numpy(batch))
    onnx_out = run_all(digits_artifact.path / "model.onnx", batch)
    for name, value in zip(["logits", *taps], eager, strict=False):
        diff = float(np.abs(onnx_out[name] - value.numpy()).max())
        assert diff <= meta["parity"]["tolerance"] * max(1.0, float(np.abs(value.numpy()).max()))


def test_layers_option_and_untrained_export(tmp_path: Path) -> None:
    result = run_cli(
        ["--out", tmp_path, "--epochs", "0", "--quiet", "--layers", "features.0,classifier.1,features.4"]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert [layer["name"] for layer in meta["layers"]] == ["features.0", "features.4", "classifier.1"]
    assert [layer["kind"] for layer in meta["layers"]] == ["conv", "pool", "linear"]
    assert meta["layers"][0]["weight"] == "features.0.weight" and meta["layers"][0]["op"] == "Conv2d"
    training = meta["training"]
    assert training["epochs"] == 0 and training["accuracy"] is None and training["history"] == []
    initial = np.load(result.written / "initial_weights.npz")
    model = onnx.load(str(result.written / "model.onnx"))
    kernel = next(
        onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "features.0.weight"
    )
    np.testing.assert_array_equal(initial["features.0.weight"], kernel)  # untrained: unchanged


def test_training_is_deterministic(tmp_path: Path) -> None:
    args = ["--epochs", "1", "--quiet", "--max-train-samples", "300", "--max-val-samples", "60"]
    a = run_cli(["--out", tmp_path / "a", *args])
    b = run_cli(["--out", tmp_path / "b", *args])
    assert (a.rc, b.rc) == (0, 0)
    ha = json.loads((a.written / "metadata.json").read_text())["training"]
    hb = json.loads((b.written / "metadata.json").read_text())["training"]
    assert (ha["train_size"], ha["val_size"]) == (300, 60)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(ha["history"]) == strip(hb["history"])
    assert (a.written / "model.onnx").read_bytes() == (b.written / "model.onnx").read_bytes()


def test_imagefolder_end_to_end(tmp_path: Path) -> None:
    root = make_imagefolder(
        tmp_path / "bars", classes=("horizontal", "vertical"), per_class=30, size=20, rgb=True
    )
    result = run_cli(
        [
            "--out",
            tmp_path / "models",
            "--dataset",
            "imagefolder",
            "--data-dir",
            root,
            "--epochs",
            "15",
            "--batch-size",
            "8",
            "--quiet",
        ]
    )
    assert result.rc == 0, result.stderr
    assert result.written == tmp_path / "models" / "imagefolder-tinyvgg" / "1"
    meta = check_contract(result.written)
    assert meta["labels"] == ["horizontal", "vertical"]
    assert meta["input"]["color_mode"] == "L"  # tinyvgg is grey: RGB folders become L
    assert meta["training"]["val_size"] == 12 and meta["training"]["accuracy"] >= 0.9
    image = np.asarray(Image.open(root / "vertical" / "000.png"))
    logits = run_all(result.written / "model.onnx", service_preprocess(image[None], meta))["logits"]
    assert logits.shape == (1, 2)


@pytest.mark.parametrize(
    "args,shape",
    [
        (["--arch", "lenet"], [-1, 1, 28, 28]),
        (["--arch", "alexnet-small"], [-1, 3, 32, 32]),
        (["--arch", "resnet18", "--size", "64", "64", "--channels", "1"], [-1, 1, 64, 64]),
    ],
)
def test_other_architectures_export_with_parity(tmp_path: Path, args: list[str], shape: list[int]) -> None:
    result = run_cli(["--out", tmp_path, "--epochs", "0", "--quiet", "--parity-images", "8", *args])
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert meta["input"]["shape"] == shape
    assert meta["params"]["total"] == sum(m["params"] for m in meta["params"]["per_module"])
    if args[1] == "resnet18":
        assert [layer["name"] for layer in meta["layers"]] == [
            "relu",
            "maxpool",
            "layer1",
            "layer2",
            "layer3",
            "layer4",
            "avgpool",
        ]
        # BN is folded into the convs by the exporter, but the kernels keep their names.
        assert meta["layers"][0]["weight"] == "conv1.weight"
        # Digits held out at 64 px, grey: stats measured on the training set.
        assert meta["input"]["mean"][0] > 0
    if args[1] == "alexnet-small":
        assert meta["input"]["color_mode"] == "RGB"
        counts = [layer["kind"] for layer in meta["layers"]]
        assert counts.count("conv") == 5 and counts.count("pool") == 3


def test_mean_std_flags_and_loaded_weights(tmp_path: Path) -> None:
    net = REGISTRY["tinyvgg"].builder(1, (28, 28), 10)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    result = run_cli(
        ["--out", tmp_path / "m", "--weights", tmp_path / "w.pt", "--mean", "0.5", "--std", "0.25", "--quiet"]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert meta["input"]["mean"] == [0.5] and meta["input"]["std"] == [0.25]
    assert meta["training"]["epochs"] == 0 and meta["training"]["weights"] == str(tmp_path / "w.pt")
    assert meta["training"]["accuracy"] is not None  # a loaded net is evaluated
    model = onnx.load(str(result.written / "model.onnx"))
    kernel = next(
        onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == "features.0.weight"
    )
    np.testing.assert_array_equal(kernel, net.features[0].weight.detach().numpy())
