"""`python -m model_export quantize`: the next version in int8, the gate, the record.

Small synthetic nets (tests/support/artifacts.py) calibrated on random images for the
mechanics, and the digits TinyVGG (exported once per session) for the gate's real figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from artifact import CalibrationMethod, Precision, read_metadata, verify_files
from model_export.quantize import SplitSizes, _Sums, images_to_judge
from tests.support.artifacts import calibration_images, write_artifact, write_int8
from tests.support.export_cli import make_imagefolder, run_cli


def _graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path / "model.onnx"))


def test_an_int8_version_is_the_next_version_with_the_float_versions_names(tmp_path: Path) -> None:
    root = tmp_path / "models"
    source = write_artifact(root, "synthetic", 1, views=True)
    written = write_int8(root)
    assert written == root / "synthetic" / "2"
    before, after = read_metadata(source), read_metadata(written)
    verify_files(written, after)
    assert after.precision is Precision.INT8 and after.quantization is not None
    assert after.quantization.quantized_from == 1 and after.quantization.method is CalibrationMethod.MINMAX
    assert after.labels == before.labels and after.input == before.input and after.output == before.output
    # Same layers, same geometry; only the kernels' initializer changed (now int8).
    assert [layer.model_copy(update={"weight": None}) for layer in after.layers] == \
        [layer.model_copy(update={"weight": None}) for layer in before.layers]
    float_graph, int8_graph = _graph(source), _graph(written)
    assert [o.name for o in int8_graph.graph.output] == [o.name for o in float_graph.graph.output]
    assert [i.name for i in int8_graph.graph.input] == [i.name for i in float_graph.graph.input]
    kernel = after.layer("features.1").weight
    initializers = {i.name: numpy_helper.to_array(i) for i in int8_graph.graph.initializer}
    assert kernel is not None and initializers[kernel].dtype == np.int8
    (reader,) = [n for n in int8_graph.graph.node if kernel in n.input]
    assert reader.op_type == "DequantizeLinear"
    with np.load(written / "initial_weights.npz") as initial:
        assert initial.files == [kernel]
    # The channel view was ranked again, over as many images as the float version's.
    assert after.channel_view is not None and before.channel_view is not None
    assert after.channel_view.images == before.channel_view.images and after.samples is not None
    # Every tapped layer and the class output has its error, in that order.
    rows = after.quantization.layers
    assert [row.name for row in rows] == [*before.layer_names, "logits"]
    assert all(row.relative_error >= 0 for row in rows)
    assert [s.batch for s in after.quantization.speed] == [1, 16]


def test_the_int8_version_measures_its_own_explanations(tmp_path: Path) -> None:
    """The float version's figures (its passes, times, beats-random shares) are not the int8
    version's: quantize measures the methods again, on the int8 graph."""
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1)
    before = read_metadata(write_int8(root)).explanations
    after = read_metadata(write_int8(root, explain_images=3)).explanations
    assert before is None  # not asked for: none, rather than the float version's
    assert after is not None and after.images == 3 and after.methods
    assert after.default_method in {m.method for m in after.methods}


def test_the_outputs_are_the_dequantized_values_close_to_the_float_ones(tmp_path: Path) -> None:
    root = tmp_path / "models"
    source = write_artifact(root, "synthetic", 1)
    written = write_int8(root)
    # Pixels like the calibration images' (random PNGs), through the artifact's recipe.
    pixels = np.random.default_rng(5).integers(0, 256, (16, 1, 8, 8)).astype(np.float32)
    images = (pixels / 255 - 0.5) / 0.25
    names = ["logits", "features.1", "features.2"]
    a = ort.InferenceSession(str(source / "model.onnx")).run(names, {"input": images})
    b = ort.InferenceSession(str(written / "model.onnx")).run(names, {"input": images})
    for name, x, y in zip(names, a, b, strict=True):
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.linalg.norm(x - y) <= 0.1 * np.linalg.norm(x), name  # SQNR above 20 dB, images unseen
    assert (b[1] >= 0).all()  # the ReLU folded into the pair's range still holds


def test_the_class_scores_are_not_rounded_to_int8(tmp_path: Path) -> None:
    """The quantizer ends the graph with a Q/DQ pair on the class scores; the export drops it
    (it flips the top-1 class wherever the top two nearly tie), and the last layer still
    reads int8 activations and weights."""
    from model_export.quantize import float_class_output

    root = tmp_path / "models"
    source = write_artifact(root, "synthetic", 1)
    graph = _graph(write_int8(root)).graph
    producer = {output: node for node in graph.node for output in node.output}
    end = producer["logits"]
    assert end.op_type == "Identity"
    layer = producer[end.input[0]]
    assert layer.op_type == "Gemm" and [producer[i].op_type for i in layer.input[:2]] == ["DequantizeLinear"] * 2
    # A graph whose class output has no such pair is left as it is.
    before = (source / "model.onnx").read_bytes()
    assert not float_class_output(source / "model.onnx", "logits")
    assert (source / "model.onnx").read_bytes() == before


def _qdq_ending(tail: list[str]) -> onnx.ModelProto:
    """x -> Gemm -> QuantizeLinear -> DequantizeLinear -> ``tail`` ops -> the graph output
    "out", as onnxruntime's quantizer ends a graph ("Cast": to float32, as the import ends a
    float16 graph; "Softmax": a graph ending in probabilities, its logits an output too)."""
    from onnx import TensorProto, helper

    scale, zero = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.int8(0), "z")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["scores"], name="fc"),
             helper.make_node("QuantizeLinear", ["scores", "s", "z"], ["scores_q"], name="q"),
             helper.make_node("DequantizeLinear", ["scores_q", "s", "z"], ["logits"], name="dq")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])]
    last = "logits"
    for i, op in enumerate(tail):
        attributes = {"to": TensorProto.FLOAT} if op == "Cast" else {}
        nodes.append(helper.make_node(op, [last], [f"t{i}"], name=f"{op}{i}", **attributes))
        last = f"t{i}"
    nodes[-1].output[0] = "out"
    if "Softmax" in tail:
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3]))
    graph = helper.make_graph(nodes, "end", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], outputs,
                              initializer=[numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "w"), scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("tail, names", [(["Cast"], ["out"]), (["Cast", "Identity"], ["out"]),
                                         (["Softmax"], ["out", "logits"])])
def test_the_pair_before_a_cast_or_a_softmax_is_dropped_too(tmp_path: Path, tail: list[str], names: list[str]) -> None:
    """A float16 graph ends Q/DQ -> Cast to float32 (the import's); a graph ending in a
    Softmax has its rounded logits under it, and rounded logits tie: both come out unrounded."""
    from model_export.quantize import float_class_output

    path = tmp_path / "end.onnx"
    onnx.save(_qdq_ending(tail), str(path))
    x = np.array([[0.123, 0.456, 0.789, 0.0]], np.float32)
    (rounded,) = ort.InferenceSession(str(path)).run(["out"], {"x": x})
    assert float_class_output(path, names) == [n for n in names if n == "logits" or tail[0] == "Cast"]
    ops = [node.op_type for node in _graph_at(path).graph.node]
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops
    (exact,) = ort.InferenceSession(str(path)).run(["out"], {"x": x})
    expected = x[:, :3] if tail[0] == "Cast" else np.exp(x[:, :3]) / np.exp(x[:, :3]).sum()
    np.testing.assert_allclose(exact, expected, rtol=1e-6)
    assert not np.allclose(rounded, expected, rtol=1e-6)  # the premise: the pair rounded them


def _graph_at(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def test_a_graph_older_than_opset_13_is_quantized_at_opset_13(tmp_path: Path) -> None:
    """Per-channel weights need DequantizeLinear's axis (opset 13); torch.onnx's TorchScript
    exporter wrote opset 11 by default. The float version stays as it was."""
    from tests.support.artifacts import sha256

    root = tmp_path / "models"
    source = write_artifact(root, "synthetic", 1)
    model = _graph(source)
    model.opset_import[0].version = 11
    onnx.checker.check_model(model)
    onnx.save(model, str(source / "model.onnx"))
    meta = json.loads((source / "metadata.json").read_text())
    meta["files"]["model.onnx"] = {"sha256": sha256(source / "model.onnx"),
                                   "bytes": (source / "model.onnx").stat().st_size}
    (source / "metadata.json").write_text(json.dumps(meta))
    written = write_int8(root)
    int8 = _graph(written)
    assert [o.version for o in int8.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert read_metadata(written).versions.opset == 13
    assert sorted(p.name for p in written.iterdir() if p.name.startswith(".")) == []  # no converted copy left
    pixels = np.random.default_rng(5).integers(0, 256, (16, 1, 8, 8)).astype(np.float32)
    images = (pixels / 255 - 0.5) / 0.25  # like the calibration images, through the recipe
    a = ort.InferenceSession(str(source / "model.onnx")).run(["logits"], {"input": images})[0]
    b = ort.InferenceSession(str(written / "model.onnx")).run(["logits"], {"input": images})[0]
    assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(a)
    assert [o.version for o in _graph(source).opset_import] == [11]


def test_the_gate_refuses_with_what_it_measured_and_writes_nothing(tmp_path: Path) -> None:
    # Ten classes of near-equal random scores: int8 noise reorders a few of them.
    probe, root = tmp_path / "probe", tmp_path / "models"
    write_artifact(probe, "synthetic", 1, classes=10)
    write_artifact(root, "synthetic", 1, classes=10)
    images = calibration_images(tmp_path / "images")
    record = read_metadata(write_int8(probe, images=images)).quantization
    assert record is not None and record.agreement < 1.0  # the premise: some image disagrees
    result = run_cli(["quantize", root / "synthetic", "--data-dir", images, "--min-agreement", "1", "--quiet"])
    assert result.rc == 2, result.stderr
    assert f"on {round(record.agreement * record.evaluation_images)} of {record.evaluation_images} held-out" \
        in result.stderr
    assert "below --min-agreement 1.0" in result.stderr and "--method entropy" in result.stderr
    assert sorted(p.name for p in (root / "synthetic").iterdir()) == ["1"]  # no version, no staging directory


def test_a_float16_import_is_quantized_from_its_float32_widening(tmp_path: Path) -> None:
    """An imported float16 graph (Casts at its edges): the quantizer reads it widened to
    float32, so the scales are float32 and onnxruntime's integer kernels take them; the int8
    version computes in float32 and its class scores stay close to the float16 version's."""
    from benchmarks import zoo
    from model_export.quantize import quantizable_graph
    from tests.support.artifacts import build_model

    model, _ = build_model(channels=1, size=8, classes=3)
    half = tmp_path / "half.onnx"
    onnx.save(zoo.to_float16(model), str(half))
    root = tmp_path / "models"
    result = run_cli(["import", half, "--name", "half", "--out", root, "--mean", "0.5", "--std", "0.25", "--quiet"])
    assert result.rc == 0, result.stderr
    widened = quantizable_graph(result.written / "model.onnx", tmp_path / "widened.onnx")
    assert widened == tmp_path / "widened.onnx"
    graph = _graph_at(widened).graph
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert all(a.i != onnx.TensorProto.FLOAT16 for n in graph.node if n.op_type == "Cast" for a in n.attribute)
    written = write_int8(root, "half")
    int8 = _graph(written)
    assert {i.data_type for i in int8.graph.initializer if i.name.endswith("_scale")} == {onnx.TensorProto.FLOAT}
    pixels = np.random.default_rng(5).integers(0, 256, (16, 1, 8, 8)).astype(np.float32)
    images = (pixels / 255 - 0.5) / 0.25
    a = ort.InferenceSession(str(result.written / "model.onnx")).run(["logits"], {"input": images})[0]
    b = ort.InferenceSession(str(written / "model.onnx")).run(["logits"], {"input": images})[0]
    assert np.linalg.norm(a - b) <= 0.1 * np.linalg.norm(a)
    # A float32 graph at opset 13 or newer is read as it is.
    assert quantizable_graph(write_artifact(root, "plain", 1) / "model.onnx", tmp_path / "x.onnx") != tmp_path / "x.onnx"


def test_an_int8_graph_onnxruntime_cannot_load_is_an_error_not_a_traceback(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from model_export import quantize as module
    from model_export.errors import ExportError

    def broken(path: Path, names: Any) -> list[str]:
        model = onnx.load(str(path))
        model.graph.node[0].op_type = "NoSuchOp"  # as an op the quantizer writes at the wrong opset
        onnx.save(model, str(path))
        return []

    monkeypatch.setattr(module, "float_class_output", broken)
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1)
    with pytest.raises(ExportError, match="does not load in onnxruntime.*nothing was written"):
        write_int8(root)
    assert sorted(p.name for p in (root / "synthetic").iterdir() if not p.name.startswith(".calibration")) == ["1"]


@pytest.mark.parametrize("min_agreement, images", [(0.0, 1), (0.5, 2), (0.9, 10), (0.99, 100), (0.995, 200),
                                                     (0.999, 1000), (1.0, 1)])
def test_a_gate_is_judged_on_enough_images_to_tell_one_disagreement(min_agreement: float, images: int) -> None:
    assert images_to_judge(min_agreement) == images


def test_the_images_that_leave_enough_to_judge_on_follow_the_split() -> None:
    sizes = SplitSizes(calibration=64, evaluation=256)  # a 224 px model's defaults
    total = sizes.total_for(100)
    assert sizes.of(total) == (total // 3, 100) and sizes.of(total - 1)[1] < 100
    assert SplitSizes(calibration=256, evaluation=1000).total_for(1000) == 1256  # calibration capped at 256


@pytest.mark.parametrize("count, args, remedy", [
    (12, [], "give --data-dir with at least 149 images the model did not learn from, or a --min-agreement these "
             "images can judge (0.875 or lower"),
    (300, ["--evaluation-images", "20"], "give --evaluation-images 100, or a --min-agreement these images can "
                                         "judge (0.95 or lower"),
])
def test_too_few_images_to_judge_the_gate_are_refused_before_quantizing(
        tmp_path: Path, count: int, args: list[str], remedy: str) -> None:
    """Eight images that all agree read "1.0" whether int8 never disagrees or once in twenty:
    below 1 / (1 - gate) images the gate cannot be judged, and nothing is written."""
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1)
    images = calibration_images(tmp_path / "images", count=count)
    result = run_cli(["quantize", root / "synthetic", "--data-dir", images, *args, "--quiet"])
    assert result.rc == 2, result.stderr
    judged = 8 if count == 12 else 20
    assert f"{judged} cannot show a top-1 agreement of 0.99: one image that disagrees is already 1/{judged}" \
        in result.stderr
    assert "Judging 0.99 takes at least 100 images" in result.stderr and remedy in result.stderr, result.stderr
    assert sorted(p.name for p in (root / "synthetic").iterdir()) == ["1"]


def test_where_int8_everywhere_misses_the_gate_the_noisiest_layers_stay_float(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same near-equal scores; the synthetic net has two tapped layers, under the quarter
    that may stay float, so the share is lifted for it: int8 everywhere disagrees on one image,
    the second attempt keeps the classifier and the conv float and agrees on all."""
    from model_export import mixed_precision
    from model_export.quantize import QuantizeOptions, quantize

    monkeypatch.setattr(mixed_precision, "MAX_FLOAT_SHARE", 1.0)
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1, classes=10)
    images = calibration_images(tmp_path / "images")
    written = quantize(QuantizeOptions(model_dir=str(root / "synthetic"), version=1, data_dir=str(images),
                                       min_agreement=1.0, progress=False, explain_images=0))
    record = read_metadata(written).quantization
    assert record is not None
    assert [(a.float_layers, a.agreement < 1.0) for a in record.attempts] == [(0, True), (2, False)]
    assert sorted(record.float_layers) == ["features.1", "logits"] and record.agreement == 1.0
    initializers = {i.name for i in _graph(written).graph.initializer}
    assert {"conv.weight", "fc.weight"} <= initializers and "conv.weight_quantized" not in initializers
    # Judged against the version it was made from, as any int8 version.
    assert record.layers[-1].name == "logits"


def test_the_cli_writes_the_version_and_prints_its_directory(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1)
    images = calibration_images(tmp_path / "images")
    result = run_cli(["quantize", root / "synthetic", "--data-dir", images, "--method", "percentile",
                      "--calibration-images", "8", "--evaluation-images", "20", "--min-agreement", "0", "--quiet"])
    assert result.rc == 0, result.stderr
    assert result.written == root / "synthetic" / "2"
    record = read_metadata(result.written).quantization
    assert record is not None and record.method is CalibrationMethod.PERCENTILE
    assert (record.calibration_images, record.evaluation_images) == (8, 20)
    # A flat folder has no labels: agreement only.
    assert record.float_accuracy is None and record.int8_accuracy is None


def test_labelled_images_give_each_versions_accuracy(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1, classes=2, size=16)
    folder = make_imagefolder(tmp_path / "images", classes=("class_0", "class_1"), rgb=False)
    record = read_metadata(write_int8(root, images=folder)).quantization
    assert record is not None and record.float_accuracy is not None and record.int8_accuracy is not None
    assert record.evaluation_images == 40 - record.calibration_images


@pytest.mark.parametrize("setup, args, message", [
    ("int8", ["--version", "2"], "is already quantized; quantize a float32 version: 1"),
    ("float", ["--version", "7"], "has no version 7; valid: 1"),
    ("float", [], "an imported model has no held-out split"),
    ("empty", [], "holds no complete version"),
])
def test_what_cannot_be_quantized_says_why(tmp_path: Path, setup: str, args: list[str], message: str) -> None:
    root = tmp_path / "models"
    if setup == "empty":
        (root / "synthetic").mkdir(parents=True)
    else:
        write_artifact(root, "synthetic", 1)
    if setup == "int8":
        write_int8(root)
        args = [*args, "--data-dir", str(calibration_images(tmp_path / "images"))]
    result = run_cli(["quantize", root / "synthetic", *args, "--quiet"])
    assert result.rc == 2 and message in result.stderr, result.stderr


def test_sqnr_and_the_worst_channel_from_the_sums() -> None:
    sums = _Sums.empty(2)
    reference = np.ones((4, 2, 3, 3), dtype=np.float32)
    other = reference.copy()
    other[:, 0] += 0.1  # channel 0: noise 1/100 of the signal's power -> 20 dB
    other[:, 1] += 0.01  # channel 1: 40 dB
    sums.add(reference, other)
    row = sums.record("layer", spatial=True)
    assert row.worst_channel == 0 and row.worst_channel_sqnr_db == pytest.approx(20.0, abs=0.01)
    assert row.sqnr_db == pytest.approx(10 * np.log10(2 / (0.01 + 0.0001)), abs=0.01)
    assert row.relative_error == pytest.approx(np.sqrt((0.01 + 0.0001) / 2), rel=1e-3)
    exact = _Sums.empty(2)
    exact.add(reference, reference)
    assert exact.record("same", spatial=True).sqnr_db is None
    # A nearly silent channel that int8 rounds to zero (0 dB) is not the layer's worst.
    faint = _Sums.empty(3)
    maps = np.ones((4, 3, 3, 3), dtype=np.float32)
    maps[:, 2] = 1e-3
    rounded = maps.copy()
    rounded[:, 2] = 0
    rounded[:, 1] += 0.05
    faint.add(maps, rounded)
    assert faint.record("faint", spatial=True).worst_channel == 1


def test_the_digits_tinyvgg_passes_the_gate_on_its_own_held_out_split(digits_artifact: Any, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(digits_artifact.path.parent, root / digits_artifact.name)
    result = run_cli(["quantize", root / digits_artifact.name, "--quiet"])
    assert result.rc == 0, result.stderr
    metadata = json.loads((result.written / "metadata.json").read_text())
    record = metadata["quantization"]
    assert record["data"].startswith("digits, held-out split (seed 0")
    assert record["agreement"] >= 0.99
    assert abs(record["float_accuracy"] - record["int8_accuracy"]) <= 0.005
    assert record["calibration_images"] + record["evaluation_images"] == len(digits_artifact.labels)
    # The filters the service draws are the int8 kernels; the layers are the float version's.
    assert [layer["name"] for layer in metadata["layers"]] == [layer["name"] for layer in digits_artifact.metadata["layers"]]


def test_precision_int8_on_a_training_export_writes_both_versions(tmp_path: Path) -> None:
    result = run_cli(["--out", tmp_path, "--epochs", "1", "--channel-images", "0", "--precision", "int8",
                      "--min-agreement", "0", "--quiet"])
    assert result.rc == 0, result.stderr
    float_dir, int8_dir = (Path(line) for line in result.stdout.strip().splitlines()[-2:])
    assert (float_dir.name, int8_dir.name) == ("1", "2")
    assert read_metadata(float_dir).precision is Precision.FLOAT32
    record = read_metadata(int8_dir).quantization
    assert record is not None and record.quantized_from == 1


def test_a_training_export_with_too_few_held_out_images_keeps_its_float_version_and_says_why(tmp_path: Path) -> None:
    result = run_cli(["--out", tmp_path, "--epochs", "1", "--max-val-samples", "60", "--channel-images", "0",
                      "--explain-images", "0", "--precision", "int8", "--quiet"])
    assert result.rc == 2, result.stderr
    assert "40 cannot show a top-1 agreement of 0.99" in result.stderr
    assert "a model trained with at least 149 held-out images (--max-val-samples)" in result.stderr
    float_dir = Path(result.stdout.strip().splitlines()[-1])
    assert read_metadata(float_dir).precision is Precision.FLOAT32
    assert sorted(p.name for p in float_dir.parent.iterdir()) == ["1"]


def test_a_tapped_map_before_a_relu_keeps_its_negative_values(tmp_path: Path) -> None:
    """onnxruntime's quantizer gives a ReLU's input the ReLU's range (from 0): a tapped Conv
    output before a ReLU (an import taps both) would lose every negative value in int8."""
    from onnx import TensorProto, helper

    from model_export.preprocessing import InputSpec
    from model_export.quantize import Images, QuantizeOptions, calibrate_and_quantize
    from tests.support.artifacts import build_model

    model, _ = build_model(channels=1, size=8, classes=3)
    model.graph.output.append(helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, ["batch", 4, 8, 8]))
    for node in model.graph.node:
        node.name = ""  # unnamed nodes, as some exporters write them
    source, target = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(source))
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(16, 1, 8, 8)).astype(np.float32) for _ in range(2)]
    spec = InputSpec(channels=1, size=(8, 8), mean=(0.5,), std=(0.25,))
    calibrate_and_quantize(source, target, Images(batches, [None, None]), spec,
                           QuantizeOptions(model_dir="unused", progress=False))
    names = ["conv_out", "features.1"]
    plain = ort.InferenceSession(str(source)).run(names, {"input": batches[0]})
    int8 = ort.InferenceSession(str(target)).run(names, {"input": batches[0]})
    assert plain[0].min() < 0 and int8[0].min() < 0.5 * plain[0].min()  # the negative half is still there
    for x, y in zip(plain, int8, strict=True):
        assert np.linalg.norm(x - y) <= 0.05 * np.linalg.norm(x)
    assert (int8[1] >= 0).all()  # and the ReLU after it still holds
    # The view pair feeds no output but the tap: the service's logits graph drops it, so the
    # Conv keeps one QuantizeLinear reader and fuses into an integer kernel.
    from service.models.runtime import class_output_only

    graph = onnx.load(str(target))
    before = [n.name for n in graph.graph.node]
    class_output_only(graph, "logits")
    dropped = sorted(set(before) - {n.name for n in graph.graph.node})
    assert dropped == ["conv_out_view_DequantizeLinear", "conv_out_view_QuantizeLinear"]
    # Grad-cam cannot start at a view (the model reads the other pair): the catalogue says why.
    from service.explain.head import NotExact, analyse_head

    refused = analyse_head(onnx.load(str(target)), "conv_out", "logits", input_shapes={"input": (1, 1, 8, 8)})
    assert isinstance(refused, NotExact) and "view of a value the model quantizes again" in refused.reason
