"""The runtime's sessions: shared dense weights give the same answers as a plain session,
an int8 version's are read in place from its file, trained filters are read at load and
initial ones on first view."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from artifact.onnx_file import ALIGNMENT, initializer_spans
from service.errors import ArtifactChanged
from service.models import runtime
from service.models.repository import load_artifact, scan
from service.models.runtime import CPU, RuntimeOptions, load_model
from tests.support.artifacts import write_artifact, write_int8


def artifact(root: Path, **kwargs: object) -> object:
    write_artifact(root, "synthetic", 1, **kwargs)
    return load_artifact(scan(root)[0])


def assert_maps_as_a_plain_session(model: runtime.ModelRuntime, path: Path, batch: np.ndarray) -> list[np.ndarray]:
    """Every output of ``model`` equals a plain onnxruntime session's of ``path``; returns those."""
    names = [model.output_name, *model.layer_names]
    expected: list[np.ndarray] = ort.InferenceSession(str(path), providers=[CPU]).run(names, {model.input_name: batch})
    for got, want in zip(model.run(batch, tuple(names)), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return expected


def backed_by_a_map(array: np.ndarray) -> bool:
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


def prepacks(session: ort.InferenceSession) -> bool:
    """Whether onnxruntime packs the weights handed to ``session`` into its own copies."""
    try:
        return session.get_session_options().get_session_config_entry("session.disable_prepacking") != "1"
    except RuntimeError:  # never set
        return True


def test_shared_weights_answer_exactly_as_a_plain_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)  # the synthetic fc.weight is small
    art = artifact(tmp_path, channels=3, size=16, classes=5)  # written as the export stage writes
    model = load_model(art, RuntimeOptions(providers=[CPU]))
    # The Gemm's weight is shared by the features session (the logits session packs its own
    # from it), the conv weight too (the logits session's layout optimizer reads its own); the
    # trained filters are that array. The dense weight (5 KB) is read in place from the file;
    # the 432-byte kernels, below ALIGN_MIN_BYTES, are copied.
    assert set(model.shared_weights) == {"fc.weight", "conv.weight"}
    assert model.filters["features.1"] is model.shared_weights["conv.weight"]
    assert model.mapped is not None and model.mapped.names == {"fc.weight"}
    assert backed_by_a_map(model.shared_weights["fc.weight"]) and not backed_by_a_map(model.shared_weights["conv.weight"])
    assert prepacks(model.logits_session) and not prepacks(model.features_session)
    batch = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    expected = assert_maps_as_a_plain_session(model, art.model_path, batch)
    (logits,) = model.run(batch, (model.output_name,))
    np.testing.assert_allclose(logits, expected[0], rtol=1e-5, atol=1e-6)


def test_sessions_that_disagree_at_load_fall_back_to_their_own_conv_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)
    monkeypatch.setattr(runtime, "_agree", lambda *args: False)  # as if sharing had broken a map
    art = artifact(tmp_path, channels=3, size=16, classes=5)
    model = load_model(art, RuntimeOptions(providers=[CPU]))
    assert "rebuilding it with its own conv weights" in caplog.text
    batch = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    names = [model.output_name, *model.layer_names]
    expected = ort.InferenceSession(str(art.model_path), providers=[CPU]).run(names, {model.input_name: batch})
    for got, want in zip(model.run(batch, tuple(names)), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nothing_is_shared_when_asked_not_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)
    model = load_model(artifact(tmp_path), RuntimeOptions(providers=[CPU], share_weights=False))
    assert model.shared_weights == {}


def test_filters_trained_are_read_at_load_and_initial_ones_on_first_view(tmp_path: Path) -> None:
    art = artifact(tmp_path)
    model = load_model(art, RuntimeOptions(providers=[CPU]))
    assert set(model.filters) == set(model.initial_filters) == {"features.1"}
    with np.load(art.initial_weights_path) as data:
        expected = data["conv.weight"]
    first = model.initial_filters["features.1"]
    np.testing.assert_array_equal(first, expected)
    assert model.initial_filters["features.1"] is first  # read once, kept
    assert not np.array_equal(model.filters["features.1"], first)


def test_initial_filters_from_a_file_rewritten_after_load_are_refused(tmp_path: Path) -> None:
    art = artifact(tmp_path)
    model = load_model(art, RuntimeOptions(providers=[CPU]))
    with np.load(art.initial_weights_path) as data:
        arrays = {key: data[key] + 1 for key in data.files}
    np.savez(art.initial_weights_path, **arrays)  # in place, where the version was loaded from
    with pytest.raises(ArtifactChanged, match="initial_weights.npz changed on disk"):
        model.initial_filters["features.1"]


def test_without_initial_weights_there_are_no_initial_filters(tmp_path: Path) -> None:
    model = load_model(artifact(tmp_path, initial_weights=False), RuntimeOptions(providers=[CPU]))
    assert model.initial_filters == {} and "features.1" in model.filters


def test_a_predictions_run_is_timed_at_load_at_each_cost_batch(tmp_path: Path) -> None:
    model = load_model(artifact(tmp_path), RuntimeOptions(providers=[CPU]))
    assert model.batch_costs is not None
    assert sorted(model.batch_costs.seconds) == sorted(runtime.COST_BATCHES)
    assert all(seconds > 0 for seconds in model.batch_costs.seconds.values())
    # What the batcher is told: a policy and the figures it came from.
    assert model.batch_costs.describe().startswith(f"batch policy {model.batch_costs.policy().value} (")


# ---- int8 versions -------------------------------------------------------------------------

def int8_pair(root: Path, **kwargs: object) -> tuple[object, object]:
    """A synthetic float version 1 and its int8 version 2 (the export stage's quantizer)."""
    write_artifact(root, "synthetic", 1, **kwargs)
    write_int8(root)
    float_ref, int8_ref = scan(root)
    return load_artifact(float_ref), load_artifact(int8_ref)


def test_an_int8_version_serves_its_float_versions_layers_filters_and_maps(tmp_path: Path) -> None:
    float_art, int8_art = int8_pair(tmp_path / "models", channels=3, size=16, classes=5)
    options = RuntimeOptions(providers=[CPU])
    plain, int8 = load_model(float_art, options), load_model(int8_art, options)
    assert int8.precision.value == "int8" and int8.layer_names == plain.layer_names
    # The filters are the int8 kernels dequantized: within half a step of each channel's scale.
    assert set(int8.filters) == set(plain.filters) == {"features.1"}
    kernels = int8.filters["features.1"]
    assert kernels.dtype == np.float32 and kernels.shape == plain.filters["features.1"].shape
    step = np.abs(plain.filters["features.1"]).max(axis=(1, 2, 3)) / 127
    assert (np.abs(kernels - plain.filters["features.1"]) <= step[:, None, None, None] / 2 + 1e-7).all()
    assert int8.filters["features.1"] is not kernels  # dequantized on each read: no float copy kept
    np.testing.assert_array_equal(int8.initial_filters["features.1"], plain.initial_filters["features.1"])
    # Feature maps and scores, dequantized, close to the float version's (images like the calibration's).
    pixels = np.random.default_rng(2).integers(0, 256, (8, 3, 16, 16)).astype(np.float32)
    batch = (pixels / 255 - 0.5) / 0.25
    names = (plain.output_name, *plain.layer_names)
    for want, got in zip(plain.run(batch, names), int8.run(batch, names), strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.linalg.norm(got - want) <= 0.1 * np.linalg.norm(want)
    # Grad-cam is offered where the float version offers it.
    assert int8.explainable is not None and plain.explainable is not None
    assert int8.explainable.catalogue().methods == plain.explainable.catalogue().methods


def test_int8_dense_weights_are_shared_with_the_features_session_only(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)  # the synthetic fc weight is small
    _, int8_art = int8_pair(tmp_path / "models", channels=3, size=16, classes=5)
    model = load_model(int8_art, RuntimeOptions(providers=[CPU]))
    # Read through their DequantizeLinear: the Gemm's weight is dense, the conv's a conv weight.
    assert {name: array.dtype for name, array in model.shared_weights.items()} == \
        {"fc.weight_quantized": np.int8, "conv.weight_quantized": np.int8}
    batch = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    expected = assert_maps_as_a_plain_session(model, int8_art.model_path, batch)
    # The logits session runs its own (prepacked) int8 weights through fused integer kernels:
    # the same scores to within the class output's quantization steps.
    (logits,) = model.run(batch, (model.output_name,))
    assert np.abs(logits - expected[0]).max() <= runtime.INT8_AGREEMENT * max(1.0, float(np.abs(expected[0]).max()))
def test_int8_weights_are_read_in_place_from_the_file_and_a_file_changed_under_them_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)  # the synthetic weights are small
    _, int8_art = int8_pair(tmp_path / "models", channels=3, size=16, classes=5)
    model = load_model(int8_art, RuntimeOptions(providers=[CPU]))
    assert model.mapped is not None and model.mapped.names == set(model.shared_weights)
    for array in model.shared_weights.values():  # views of the file's bytes, not copies
        assert backed_by_a_map(array) and not array.flags.writeable
    batch = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    assert_maps_as_a_plain_session(model, int8_art.model_path, batch)
    names = (model.output_name, *model.layer_names)
    data = int8_art.model_path.read_bytes()
    int8_art.model_path.write_bytes(data)  # rewritten in place: a new modification time
    os.utime(int8_art.model_path, ns=(1, 1))
    with pytest.raises(ArtifactChanged, match="model.onnx changed on disk"):
        model.run(batch, names)
    with pytest.raises(ArtifactChanged):
        model.trained_filters("features.1")
    (logits,) = model.run(batch, (model.output_name,))  # predictions hold their own weights
    assert logits.shape == (2, 5)


def test_float_weights_off_a_boundary_are_copied_and_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "SHARE_MIN_BYTES", 0)
    art = artifact(tmp_path, channels=3, size=16, classes=5)
    proto = onnx.load(str(art.model_path))
    proto.graph.initializer[0].doc_string = "x"  # a byte before the rest: a layout no export writes
    onnx.save(proto, str(art.model_path))
    os.utime(art.model_path)
    spans = initializer_spans(art.model_path.read_bytes())
    assert spans["fc.weight"][0] % ALIGNMENT
    model = load_model(art, RuntimeOptions(providers=[CPU]))
    assert "fc.weight" not in (model.mapped.names if model.mapped else set())
    assert not backed_by_a_map(model.shared_weights["fc.weight"])
    assert not prepacks(model.logits_session)  # the one copy both sessions read, as it is
    batch = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(art.model_path), providers=[CPU]).run(["logits"], {model.input_name: batch})[0]
    np.testing.assert_allclose(model.run(batch, ("logits",))[0], want, rtol=1e-5, atol=1e-6)


def test_a_fixed_batch_graph_runs_any_batch_in_runs_of_its_size(tmp_path: Path) -> None:
    """An imported graph whose batch could not be made dynamic: every batch is cut into runs
    of its size, the last padded, and the answers are those of the same weights run freely."""
    fixed = load_model(artifact(tmp_path / "fixed", fixed_batch=2), RuntimeOptions(providers=[CPU]))
    free = load_model(artifact(tmp_path / "free"), RuntimeOptions(providers=[CPU]))
    batch = np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)
    names = ("logits", "features.2")
    for got, want in zip(fixed.run(batch, names), free.run(batch, names)):
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-6)
    assert fixed.run(batch[:2], ("logits",))[0].shape == (2, 3)


@pytest.mark.parametrize("allow", [False, True])
def test_spinning_when_allowed_stops_as_each_run_returns(allow: bool) -> None:
    options = RuntimeOptions(providers=[CPU], allow_spinning=allow).session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if allow else "0")
    if allow:  # never left spinning between runs, where decoding and HTTP need the cores
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_cpu_sessions_do_not_keep_their_graphs_bytes(tmp_path: Path) -> None:
    """onnxruntime keeps the bytes a session was opened from for the session's life (its
    ``_model_bytes``): 54 MB for an int8 AlexNet's logits graph. On CPU they open from a file."""
    model = load_model(artifact(tmp_path / "m"), RuntimeOptions(providers=[CPU]))
    for session in (model.logits_session, model.features_session):
        assert getattr(session, "_model_bytes", None) is None
    assert not any(tmp_path.glob("**/graph-*.onnx"))


def pooling_graph() -> onnx.ModelProto:
    """x -> four poolings in a row -> y: two that give back their input (1x1, stride 1, no
    padding), one that does not (2x2), one whose Indices output someone reads."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], name="adaptive", kernel_shape=[1, 1], strides=[1, 1],
                         pads=[0, 0, 0, 0], count_include_pad=1),
        helper.make_node("MaxPool", ["a"], ["b"], name="max1", kernel_shape=[1, 1]),
        helper.make_node("MaxPool", ["b"], ["c"], name="max2", kernel_shape=[2, 2]),
        helper.make_node("MaxPool", ["c"], ["d", "where"], name="indexed", kernel_shape=[1, 1]),
        helper.make_node("Cast", ["where"], ["where_f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["d", "where_f"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("a", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_the_predictions_graph_runs_a_pooling_that_changes_nothing_as_an_identity() -> None:
    """AlexNet's adaptive pooling at 224 px is a 1x1 window: the predictions graph gives the
    same scores without it (in an int8 graph onnxruntime then drops its Q/DQ pair too)."""
    model = pooling_graph()
    x = np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)
    (before,) = ort.InferenceSession(model.SerializeToString(), providers=[CPU]).run(["y"], {"x": x})
    runtime.class_output_only(model, "y")
    ops = {node.name: node.op_type for node in model.graph.node if node.name}
    assert ops == {"adaptive": "Identity", "max1": "Identity", "max2": "MaxPool", "indexed": "MaxPool", "add": "Add"}
    assert not any(node.attribute for node in model.graph.node if node.op_type == "Identity")
    (after,) = ort.InferenceSession(model.SerializeToString(), providers=[CPU]).run(["y"], {"x": x})
    np.testing.assert_array_equal(after, before)
