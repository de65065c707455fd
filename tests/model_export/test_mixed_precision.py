"""model_export/mixed_precision.py: which layers an int8 version keeps float when the gate
would refuse, judged by the noise each layer adds rather than the noise it carries."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from artifact import LayerError
from model_export import cli, quantize
from model_export.mixed_precision import added_noise, excluded_nodes, float_layer_steps, layer_nodes, most_hurt


def _residual_graph(path: Path) -> Path:
    """input -> conv1 -> relu1 -> (conv2 -> relu2) + relu1 -> add; shape ops in between are
    walked through (a Reshape pair between relu1 and conv2, its shape an initializer)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 2, 4, 4])
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Reshape", ["r1", "shape"], ["r1b"], name="reshape"),
        helper.make_node("Conv", ["r1b", "w2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name=""),  # unnamed: cannot be excluded by name
        helper.make_node("Add", ["r2", "r1"], ["sum"], name="add"),
    ]
    weights = [helper.make_tensor(n, TensorProto.FLOAT, [2, 2, 1, 1], [0.5] * 4) for n in ("w1", "w2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c1", "r1", "c2", "r2", "sum")],
        [shape, *weights])
    onnx.save(helper.make_model(graph), path)
    return path


def _error(name: str, relative: float) -> LayerError:
    return LayerError(name=name, sqnr_db=None, relative_error=relative)


def test_each_layer_owns_the_nodes_between_it_and_the_layers_it_reads(tmp_path: Path) -> None:
    graph = layer_nodes(_residual_graph(tmp_path / "m.onnx"), ["c1", "r1", "c2", "r2", "sum"])
    assert graph["c1"].nodes == ("conv1",) and graph["c1"].ancestors == ()
    assert graph["r1"].ancestors == ("c1",)
    assert set(graph["c2"].nodes) == {"conv2", "reshape"} and graph["c2"].ancestors == ("r1",)
    assert graph["r2"].nodes == () and graph["r2"].ancestors == ("c2",)
    assert graph["sum"].nodes == ("add",) and graph["sum"].ancestors == ("r1", "r2")


def test_the_layer_adding_the_most_noise_is_kept_not_the_one_carrying_the_most(tmp_path: Path) -> None:
    graph = layer_nodes(_residual_graph(tmp_path / "m.onnx"), ["c1", "r1", "c2", "r2", "sum"])
    # conv2 adds most (0.01 -> 0.2); the Add at the end carries the most but adds little.
    errors = [_error("c1", 0.1), _error("r1", 0.1), _error("c2", 0.2), _error("r2", 0.2), _error("sum", 0.21)]
    added = added_noise(errors, graph)
    assert max(added, key=lambda n: added[n]) == "c2"
    assert abs(added["sum"] - (0.21 ** 2 - 0.2 ** 2)) < 1e-12  # against the worse of its two inputs
    assert most_hurt(errors, graph, 1) == ["c2"]
    # r2 adds nothing of its own, and its node has no name: never chosen.
    assert most_hurt(errors, graph, 3) == ["c2", "c1", "sum"]
    assert most_hurt(errors, graph, 2, kept=["sum"]) == ["sum", "c2"]
    assert excluded_nodes(graph, ["c2", "sum"]) == ["add", "conv2", "reshape"]


def test_attempts_double_up_to_the_limit_and_a_quarter_of_the_layers() -> None:
    assert float_layer_steps(100, 8) == [2, 4, 8]
    assert float_layer_steps(100, 5) == [2, 4, 5]
    assert float_layer_steps(12, 8) == [2, 3]
    assert float_layer_steps(4, 8) == [1]
    assert float_layer_steps(3, 8) == [] and float_layer_steps(100, 0) == []


def test_the_cli_default_is_the_export_stages() -> None:
    assert cli.DEFAULT_MAX_FLOAT_LAYERS == quantize.DEFAULT_MAX_FLOAT_LAYERS
