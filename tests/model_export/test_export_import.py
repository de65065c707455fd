"""`model_export import`: an ONNX file made elsewhere becomes a convscope artifact."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.support.export_cli import check_contract, run_cli, tree
from tests.support.onnx_files import export_small


def test_import_rewrites_a_fixed_batch_model(tmp_path: Path) -> None:
    source = tmp_path / "small.onnx"
    net = export_small(source)
    original = onnx.load(str(source))
    assert original.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # fixed batch
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\nfrog\n")
    result = run_cli(
        [
            "import",
            source,
            "--name",
            "small",
            "--out",
            tmp_path / "models",
            "--labels",
            labels,
            "--mean",
            "0.5",
            "--std",
            "0.5",
        ]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert meta["arch"] == "imported" and meta["training"] is None
    assert meta["labels"] == ["cat", "dog", "bird", "fish", "frog"]
    assert meta["input"]["shape"] == [-1, 3, 20, 20] and meta["input"]["mean"] == [0.5, 0.5, 0.5]
    assert meta["output"] == {"name": "logits", "shape": [-1, 5], "kind": "logits", "logits": None}
    layers = {layer["name"]: layer for layer in meta["layers"]}
    # Named from the dynamo exporter's module scopes; the global pool (a ReduceMean) is a layer too.
    assert [(layer["name"], layer["op"]) for layer in meta["layers"]] == [
        ("body.0", "Conv"), ("body.2", "Relu"), ("body.3", "MaxPool"), ("body.4", "Conv"), ("body.5", "Relu"),
        ("body.6", "ReduceMean")]
    first_conv, first_relu, pool, _, last_relu, global_pool = meta["layers"]
    assert global_pool["kind"] == "pool" and global_pool["output_shape"] == [-1, 6, 1, 1]
    assert (first_conv["kind"], first_relu["kind"], pool["kind"]) == ("conv", "conv", "pool")
    assert first_relu["conv"] == first_conv["name"] and first_relu["weight"] == "body.0.weight"
    assert (
        first_relu["kernel_size"] == [3, 3]
        and first_relu["in_channels"] == 3
        and first_relu["out_channels"] == 4
    )
    assert [(x["receptive_field"], x["stride"]) for x in meta["layers"][:5]] == [
        (3, 1),
        (3, 1),
        (4, 2),
        (8, 4),
        (8, 4),
    ]
    assert layers[last_relu["name"]]["output_shape"] == [-1, 6, 4, 4]
    # Counted from the file's float initializers: the exporter may have folded the
    # BatchNorm into the first conv, so the file can hold fewer numbers than PyTorch.
    params = meta["params"]
    floats = [i for i in original.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert params["total"] == sum(int(np.prod(i.dims)) for i in floats)
    assert params["conv"] == 4 * 3 * 9 + 4 + 6 * 4 * 9 + 6 and params["dense"] == 6 * 5 + 5
    assert params["total"] == params["conv"] + params["dense"] + params["other"]
    assert meta["parity"]["passed"] and meta["parity"]["max_abs_diff"]["logits"] < 1e-5
    assert meta["versions"]["torch"] is None and meta["versions"]["opset"] >= 17

    # The added outputs run, at any batch size, and logits still match PyTorch.
    sess = ort.InferenceSession(str(result.written / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["logits", *layers]
    x = np.random.default_rng(1).standard_normal((7, 3, 20, 20)).astype(np.float32)
    outputs = dict(zip(names, sess.run(None, {"input": x}), strict=False))
    with torch.no_grad():
        expected = net(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5)
    for name, layer in layers.items():
        assert list(outputs[name].shape) == [7, *layer["output_shape"][1:]]
    assert sess.run(None, {"input": x[:1]})[0].shape == (1, 5)


def test_import_a_model_exported_by_this_stage(tmp_path: Path, digits_artifact) -> None:  # type: ignore[no-untyped-def]
    """Re-importing our own artifact: dynamic batch already, labels as a JSON list."""
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(digits_artifact.classes))
    result = run_cli(
        [
            "import",
            digits_artifact.path / "model.onnx",
            "--name",
            "again",
            "--out",
            tmp_path,
            "--labels",
            labels,
            "--output",
            "logits",
        ]
    )
    assert result.rc == 0, result.stderr
    meta = check_contract(result.written)
    assert meta["labels"] == digits_artifact.classes
    assert meta["params"]["total"] == digits_artifact.metadata["params"]["total"]
    convs = [layer for layer in meta["layers"] if layer["op"] == "Conv"]
    assert [c["receptive_field"] for c in convs] == [3, 5, 10, 14]
    assert meta["parity"]["max_abs_diff"]["logits"] == 0.0


@pytest.mark.parametrize(
    "content,message",
    [
        (b"this is not an onnx model", "is not an ONNX model"),
        (b"", "is not an ONNX model"),
    ],
)
def test_import_rejects_files_that_are_not_onnx(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = run_cli(["import", bad, "--name", "bad", "--out", tmp_path / "models"])
    assert result.rc == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert tree(tmp_path / "models") == []


def test_import_rejects_a_wrong_label_count(tmp_path: Path) -> None:
    source = tmp_path / "small.onnx"
    export_small(source)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    result = run_cli(["import", source, "--name", "small", "--out", tmp_path / "models", "--labels", labels])
    assert result.rc == 2 and result.stderr == "error: 2 labels for 5 classes\n"
    assert tree(tmp_path / "models") == []


def test_import_without_mean_std_says_it_normalises_nothing(tmp_path: Path) -> None:
    source = tmp_path / "small.onnx"
    export_small(source)
    quiet = run_cli(["import", source, "--name", "given", "--out", tmp_path, "--mean", "0.5", "--std", "0.25"])
    assert quiet.rc == 0 and quiet.stderr == ""
    result = run_cli(["import", source, "--name", "bare", "--out", tmp_path, "--std", "0.25"])
    assert result.rc == 0, result.stderr
    assert result.stderr.startswith("warning: no --mean given") and result.stderr.count("\n") == 1
    meta = json.loads((result.written / "metadata.json").read_text())
    assert meta["input"]["mean"] == [0.0, 0.0, 0.0] and meta["input"]["std"] == [0.25, 0.25, 0.25]
    both = run_cli(["import", source, "--name", "neither", "--out", tmp_path])
    assert "no --mean or --std given" in both.stderr


def test_an_imported_conv_and_its_relu_both_show_the_kernels(tmp_path: Path) -> None:
    """The Conv owns the kernels and the ReLU after it shows their outputs: both list the
    initializer as `weight`, and the service serves filters for both (trained and initial
    alike), not only for the last layer that names it."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.models.repository import load_artifact, scan
    from service.models.runtime import RuntimeOptions, load_model
    from service.settings import Settings

    source = tmp_path / "small.onnx"
    export_small(source)
    result = run_cli(["import", source, "--name", "small", "--out", tmp_path / "models", "--mean", "0", "--std", "1"])
    assert result.rc == 0, result.stderr
    layers = json.loads((result.written / "metadata.json").read_text())["layers"]
    conv, relu = layers[0], layers[1]
    assert (conv["op"], relu["op"]) == ("Conv", "Relu")
    assert conv["weight"] == relu["weight"] == "body.0.weight" and relu["conv"] == conv["name"]

    model = load_model(load_artifact(scan(tmp_path / "models")[0]), RuntimeOptions(providers=["CPUExecutionProvider"]))
    kernels = next(
        onnx.numpy_helper.to_array(i) for i in onnx.load(str(source)).graph.initializer if i.name == "body.0.weight"
    )
    for layer in (conv, relu):
        np.testing.assert_array_equal(model.filters[layer["name"]], kernels)
    with TestClient(create_app(Settings(model_repository=tmp_path / "models"))) as client:
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        for layer in (conv, relu):
            response = client.get(f"/v1/models/small/layers/{layer['name']}/filters.png")
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/png"
        pool = client.get(f"/v1/models/small/layers/{layers[2]['name']}/filters.png")
        assert pool.status_code == 404 and conv["name"] in pool.json()["error"]
