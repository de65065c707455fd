"""`model_export import` on the graphs real files hold: the class output's kind, layer names
from both torch exporters' scopes and their blocks, every activation and merge tapped,
NHWC and float16 edges, fixed batches, external data, opsets, `--layers` patterns, and
every refusal one line with nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from benchmarks import zoo
from model_export.graph_names import _from_torchscript, groups
from tests.support.export_cli import run_cli, tree

SIZE = 16


class Block(nn.Module):
    """A residual block with a squeeze-excite gate and SiLU, as in EfficientNet."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return x + y * self.gate(self.fc(self.pool(y)))


class Net(nn.Module):
    """Stem, two residual blocks, activations of every kind, a head that flattens with view."""

    def __init__(self, final: str | None = None, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                  nn.Hardswish())
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.tail = nn.Sequential(nn.Conv2d(8, 8, 1), nn.LeakyReLU(0.1), nn.Conv2d(8, 8, 1), nn.GELU())
        self.head = nn.Linear(8, classes)
        self.final = {"softmax": nn.Softmax(dim=1), "log_softmax": nn.LogSoftmax(dim=1), "sigmoid": nn.Sigmoid(),
                      None: nn.Identity()}[final]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tail(self.blocks(self.stem(x))).mean((2, 3))
        return self.final(self.head(x.view(x.size(0), -1)))


def export(net: nn.Module, path: Path, *, dynamo: bool = False, opset: int = 17, dynamic: bool = True,
           external: bool = False) -> Path:
    torch.manual_seed(0)
    net.eval()
    example = torch.randn(2 if dynamic else 1, 3, SIZE, SIZE)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation: users still run it
        if dynamo:
            shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic else None
            torch.onnx.export(net, (example,), str(path), dynamo=True, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_shapes=shapes, external_data=external)
        else:
            axes = {"x": {0: "n"}, "y": {0: "n"}} if dynamic else None
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


def imported(tmp_path: Path, source: Path, *extra: Any, name: str = "m") -> tuple[dict[str, Any], Path, str]:
    result = run_cli(["import", source, "--name", name, "--out", tmp_path / "models", "--mean", "0", "--std", "1",
                      *extra])
    assert result.rc == 0, result.stderr
    return json.loads((result.written / "metadata.json").read_text()), result.written, result.stderr


def session(path: Path) -> ort.InferenceSession:
    """A session of an ONNX file, or of an artifact version's model."""
    path = path / "model.onnx" if path.is_dir() else path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def images(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


# --- names and blocks ---------------------------------------------------------------------

def test_torchscript_scopes_become_module_paths() -> None:
    assert _from_torchscript("/features/features.1/block/block.0/block.0.2/Relu") == "features.1.block.0.2"
    assert _from_torchscript("/layer1/layer1.0/relu_1/Relu") == "layer1.0.relu_1"
    assert _from_torchscript("/layer1/layer1.0/Add") == "layer1.0"
    assert _from_torchscript("/Flatten") is None


def test_blocks_are_the_modules_that_merge_paths() -> None:
    paths = {"conv1": "conv1", "layer1.0.conv1": "layer1.0.conv1", "layer1.0": "layer1.0",
             "features.0.0": "features.0.0", "features.1.block.0.0": "features.1.block.0.0",
             "features.3.block.0.0": "features.3.block.0.0", "fc": "fc", "x": None}
    found = groups(paths, {"layer1.0", "features.3"})
    assert found == {"conv1": "conv1", "layer1.0.conv1": "layer1.0", "layer1.0": "layer1.0",
                     "features.0.0": "features.0", "features.1.block.0.0": "features.1",
                     "features.3.block.0.0": "features.3", "fc": "fc", "x": None}
    assert groups(paths, set()) == dict.fromkeys(paths)  # a chain: no blocks


def test_both_torch_exporters_give_the_same_names_blocks_and_taps(tmp_path: Path, net: nn.Module) -> None:
    scripted, _, _ = imported(tmp_path, export(net, tmp_path / "ts.onnx"), name="ts")
    dynamo, _, _ = imported(tmp_path, export(net, tmp_path / "dynamo.onnx", dynamo=True, opset=18), name="dynamo")
    rows = [(layer["name"], layer["op"], layer["kind"], layer["group"]) for layer in scripted["layers"]]
    # The same layers (ops may differ: a global pool is GlobalAveragePool or ReduceMean).
    assert [(r[0], r[2], r[3]) for r in rows] == [(layer["name"], layer["kind"], layer["group"])
                                                  for layer in dynamo["layers"]]
    by_name = {row[0]: row for row in rows}
    # Every activation, not only Relu: ReLU6 (Clip), Hardswish, SiLU spelled x * Sigmoid(x),
    # LeakyRelu, GELU (spelled with Erf by TorchScript, one op by dynamo), each as its module.
    assert by_name["stem.1"][1:3] == ("Clip", "conv") and by_name["stem.3"][1:3] == ("HardSwish", "conv")
    assert by_name["blocks.0.act"][1:3] == ("SiLU", "conv")
    assert by_name["tail.1"][1] == "LeakyRelu" and by_name["tail.3"][1] == "Gelu"
    # The squeeze-excite product and the residual Add are merges; the Add names its block.
    assert by_name["blocks.0"] == ("blocks.0", "Add", "merge", "blocks.0")
    assert by_name["blocks.0.Mul"] == ("blocks.0.Mul", "Mul", "merge", "blocks.0")
    assert "blocks.0.gate" not in by_name  # a gate is shown by the product it scales
    # A functional op outside every module (`x.mean((2, 3))`) is named, and grouped, by its op.
    assert {row[3] for row in rows} == {"stem", "blocks.0", "blocks.1", "tail", "ReduceMean"}
    assert all(layer["conv"] == "stem.0" for layer in scripted["layers"] if layer["name"] == "stem.1")


def test_other_exporters_names_are_kept_sanitised_and_unique(tmp_path: Path) -> None:
    """tf2onnx-style node names: slashes become dots, other characters '_', duplicates numbered."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "k")
    fc = numpy_helper.from_array(np.ones((4, 2), np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x:0", "k"], ["a:0"], name="model/conv 1/Conv2D", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a:0"], ["b:0"], name="model/conv 1/Relu"),
        helper.make_node("Relu", ["b:0"], ["c:0"], name="model/conv:1/Relu"),
        helper.make_node("GlobalAveragePool", ["c:0"], ["d:0"], name=""),
        helper.make_node("Flatten", ["d:0"], ["e:0"], name="flat"),
        helper.make_node("MatMul", ["e:0", "fc"], ["scores:0"], name="model/dense/MatMul"),
    ]
    graph = helper.make_graph(nodes, "tf", [helper.make_tensor_value_info("x:0", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("scores:0", TensorProto.FLOAT, [1, 2])], [w, fc])
    source = tmp_path / "tf.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx",
                                ir_version=8), source)
    meta, _, _ = imported(tmp_path, source)
    assert [layer["name"] for layer in meta["layers"]] == [
        "model.conv_1.Conv2D", "model.conv_1.Relu", "model.conv_1.Relu_1", "d_0"]
    assert meta["source"]["exporter"] == "tf2onnx" and meta["source"]["batch"] == 1


# --- the class output --------------------------------------------------------------------

@pytest.mark.parametrize("final, kind, name", [
    (None, "logits", "logits"),
    ("softmax", "probabilities", "probabilities"),
    ("log_softmax", "log_probabilities", "log_probabilities"),
    ("sigmoid", "multilabel", "scores"),
])
def test_the_output_kind_is_read_from_the_graph(tmp_path: Path, final: str | None, kind: str, name: str) -> None:
    torch.manual_seed(0)
    net = Net(final).eval()
    meta, path, _ = imported(tmp_path, export(net, tmp_path / "m.onnx"))
    logits = "logits" if final else None
    assert meta["output"] == {"name": name, "shape": [-1, 5], "kind": kind, "logits": logits}
    x = images()
    outputs = dict(zip([o.name for o in session(path).get_outputs()], session(path).run(None, {"input": x}),
                       strict=True))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
        before = net.head(net.tail(net.blocks(net.stem(torch.from_numpy(x)))).mean((2, 3))).numpy()
    np.testing.assert_allclose(outputs[name], expected, atol=1e-5)
    if logits:  # the scores before the final op, for explanations to target
        np.testing.assert_allclose(outputs["logits"], before, atol=1e-5)
        assert list(outputs) [:2] == [name, "logits"]


def test_output_kind_can_be_overridden(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = export(Net("softmax"), tmp_path / "m.onnx")
    meta, _, _ = imported(tmp_path, source, "--output-kind", "logits")
    assert meta["output"] == {"name": "logits", "shape": [-1, 5], "kind": "logits", "logits": None}


# --- the edges of the graph -------------------------------------------------------------

def test_an_nhwc_input_is_served_nchw(tmp_path: Path, net: nn.Module) -> None:
    source = tmp_path / "nhwc.onnx"
    onnx.save(zoo.with_nhwc_input(onnx.load(str(export(net, tmp_path / "m.onnx")))), source)
    meta, path, _ = imported(tmp_path, source)
    assert meta["source"]["layout"] == "NHWC" and meta["input"]["shape"] == [-1, 3, SIZE, SIZE]
    model = onnx.load(str(path / "model.onnx"))
    assert model.graph.node[0].op_type == "Conv"  # tf2onnx's Transpose dropped, not doubled
    x = images()
    original = session(source).run(None, {"input_1": x.transpose(0, 2, 3, 1).copy()})[0]
    np.testing.assert_allclose(session(path).run(["logits"], {"input": x})[0], original, atol=1e-5)
    assert all(len(layer["output_shape"]) != 4 or layer["output_shape"][1] == 8 for layer in meta["layers"][1:])


def test_an_nhwc_input_read_before_its_transpose_gets_one_added(tmp_path: Path) -> None:
    """NHWC input, scaled before the exporter's Transpose: the stored graph transposes back."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "k")
    nodes = [
        helper.make_node("Mul", ["image", "half"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["scores"], axes=[2, 3], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 8, 8, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 4])],
                              [w, numpy_helper.from_array(np.float32(0.5), "half")])
    source = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), source)
    meta, path, _ = imported(tmp_path, source)
    assert meta["source"]["layout"] == "NHWC" and meta["input"]["shape"] == [-1, 3, 8, 8]
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = session(source).run(None, {"image": x.transpose(0, 2, 3, 1).copy()})[0]
    np.testing.assert_allclose(session(path).run(["logits"], {"input": x})[0], expected, atol=1e-6)


def test_a_float16_model_takes_and_gives_float32(tmp_path: Path) -> None:
    """Casts at the edges and on every layer; the service's fast path gives the file's scores
    (its dense weight, over 1 MB, is not shared between the sessions: float16)."""
    from service.repository import load_artifact, scan
    from service.runtime import RuntimeOptions, load_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 1024, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(1024, 600)).eval()
    source = tmp_path / "half.onnx"
    onnx.save(zoo.to_float16(onnx.load(str(export(net, tmp_path / "m.onnx")))), source)
    meta, path, _ = imported(tmp_path, source)
    assert meta["source"]["dtype"] == "float16" and "float16" in meta["parity"]["criterion"]
    assert meta["parity"]["tolerance"] == 1e-2
    model = onnx.load(str(path / "model.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    casts = {n.name for n in model.graph.node if n.op_type == "Cast"}
    assert {f"convscope/{layer['name']}/to_float32" for layer in meta["layers"]} <= casts
    x = images(1)
    original = session(source).run(None, {"x": x.astype(np.float16)})[0].astype(np.float32)
    loaded = load_model(load_artifact(scan(tmp_path / "models")[0]), RuntimeOptions(providers=["CPUExecutionProvider"]))
    served = loaded.logits_session.run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(served, original, atol=1e-2 * max(1.0, float(np.abs(original).max())))


def test_a_fixed_batch_is_made_dynamic(tmp_path: Path, net: nn.Module) -> None:
    for dynamo in (False, True):
        source = export(net, tmp_path / f"fixed-{dynamo}.onnx", dynamo=dynamo, opset=18, dynamic=False)
        meta, path, stderr = imported(tmp_path, source, name=f"fixed-{int(dynamo)}")
        assert meta["source"]["batch"] == 1 and meta["input"]["fixed_batch"] is None and stderr == ""
        assert session(path).run(["logits"], {"input": images(5)})[0].shape == (5, 5)


def test_a_batch_the_graph_fixes_stays_fixed_and_says_so(tmp_path: Path) -> None:
    """A graph that flattens its batch of 1 away cannot run other batches: kept at 1."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "k"),
             numpy_helper.from_array(np.array([128], np.int64), "flat"),
             numpy_helper.from_array(rng.standard_normal((128, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1, 5], np.int64), "rows")]
    nodes = [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "flat"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("Reshape", ["m", "rows"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    source = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), source)
    meta, path, stderr = imported(tmp_path, source)
    assert meta["input"]["fixed_batch"] == 1 and meta["input"]["shape"] == [1, 3, 8, 8]
    assert meta["output"]["shape"] == [1, 5]
    assert meta["source"]["rewrites"][-1].startswith("the batch stays fixed at 1")
    assert stderr == "note: g.onnx runs only batches of 1 (its graph fixes the batch): it is served 1 image(s) per run\n"
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(session(path).run(["logits"], {"input": x})[0], session(source).run(None, {"x": x})[0],
                               atol=1e-5)


def test_external_data_is_read_and_stored_in_one_file(tmp_path: Path, net: nn.Module) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    model = onnx.load(str(export(net, tmp_path / "m.onnx")))
    onnx.save(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    assert (folder / "m.onnx.data").is_file()
    meta, path, _ = imported(tmp_path, folder / "m.onnx")
    assert meta["source"]["external_data"] is True
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "model.onnx"]
    stored = onnx.load(str(path / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)


def test_opset_9_imports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    meta, path, _ = imported(tmp_path, export(net, tmp_path / "m.onnx", opset=9))
    assert meta["source"]["opset"] == 9 and [layer["name"] for layer in meta["layers"]] == ["0", "1", "2", "3", "4"]
    with torch.no_grad():
        expected = net(torch.from_numpy(images())).numpy()
    np.testing.assert_allclose(session(path).run(["logits"], {"input": images()})[0], expected, atol=1e-5)


# --- --layers --------------------------------------------------------------------------

def test_layers_are_chosen_by_glob_regex_or_block(tmp_path: Path, net: nn.Module) -> None:
    source = export(net, tmp_path / "m.onnx")
    glob, _, _ = imported(tmp_path, source, "--layers", "stem.*,tail.3", name="glob")
    assert [layer["name"] for layer in glob["layers"]] == ["stem.0", "stem.1", "stem.2", "stem.3", "tail.3"]
    regex, _, _ = imported(tmp_path, source, "--layers", r"re:blocks\.1\.(conv|act)", name="regex")
    assert [layer["name"] for layer in regex["layers"]] == ["blocks.1.conv", "blocks.1.act"]
    block, _, _ = imported(tmp_path, source, "--layers", "blocks.1", name="block")
    assert {layer["group"] for layer in block["layers"]} == {"blocks.1"} and len(block["layers"]) > 3


def test_a_layer_pattern_that_matches_nothing_names_the_layers(tmp_path: Path, net: nn.Module) -> None:
    result = run_cli(["import", export(net, tmp_path / "m.onnx"), "--name", "m", "--out", tmp_path / "models",
                      "--mean", "0", "--std", "1", "--layers", "stem.*,layer4.*"])
    assert result.rc == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --layers pattern 'layer4.*' matches no layer")
    assert "layers: stem.0, stem.1," in result.stderr and "blocks: stem, blocks.0, blocks.1, tail" in result.stderr
    assert tree(tmp_path / "models") == []


# --- refusals --------------------------------------------------------------------------

def _graph(inputs: list[Any], outputs: list[Any], nodes: list[Any], opset: int = 13, ir: int = 8,
           inits: list[Any] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def _image(name: str = "x", shape: list[Any] | None = None, dtype: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, dtype, shape or ["n", 3, 8, 8])


def _scores(name: str = "y") -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 3])


_POOL = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
REFUSALS = {
    "two inputs": (_graph([_image("x"), _image("mask")], [_scores()],
                          [helper.make_node("Add", ["x", "mask"], ["s"]),
                           helper.make_node("ReduceMean", ["s"], ["y"], axes=[2, 3], keepdims=0)]),
                   "has 2 graph inputs ('x', 'mask'); convscope serves models with one image input"),
    "not an image": (_graph([_image(shape=["n", 784])], [_scores()],
                            [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"])],
                            inits=[numpy_helper.from_array(np.array([v], np.int64), k)
                                   for k, v in (("s", 0), ("e", 3), ("a", 1))]),
                     "input 'x' has rank 2 ([n, 784]); an image input is [batch, C, H, W] or [batch, H, W, C]"),
    "uint8 input": (_graph([_image(dtype=TensorProto.UINT8)], [_scores()],
                           [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                            helper.make_node("ReduceMean", ["f"], ["y"], axes=[2, 3], keepdims=0)]),
                    "input 'x' is uint8; convscope feeds float32 (or float16) images"),
    "dynamic size": (_graph([_image(shape=["n", 3, "h", "w"])], [_scores()], [_POOL]),
                     "has a dynamic image size: give --size H W"),
    "four channels": (_graph([_image(shape=["n", 4, 8, 8])], [_scores()], [_POOL]),
                      "input 'x' [n, 4, 8, 8] read as NCHW has 4 channels; convscope feeds 1 (grey) or 3 (RGB)"),
    "sequence output": (_graph([_image()], [helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, None)],
                               [helper.make_node("SequenceConstruct", ["x"], ["y"])]),
                        "output 'y' is a sequence_type, not a tensor"),
    "op onnxruntime lacks": (helper.make_model(
        helper.make_graph([helper.make_node("Wobble", ["x"], ["y"], domain="com.example")], "g", [_image()],
                          [_scores()]),
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)], ir_version=8),
        "cannot run"),
    "opset too new": (_graph([_image()], [_scores()], [_POOL], opset=27, ir=13),
                      "uses opset 27; onnxruntime 1.31.1 runs opsets up to 26: re-export it with opset 26 or lower"),
    "opset too old": (_graph([_image()], [_scores()], [helper.make_node("GlobalAveragePool", ["x"], ["y"])], opset=7),
                      "uses opset 7; convscope imports opsets 9 to 26"),
    "IR too new": (_graph([_image()], [_scores()], [_POOL], ir=14),
                   "has IR version 14; onnxruntime 1.31.1 reads IR versions up to 13"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_what_cannot_be_imported_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    model, message = REFUSALS[case]
    source = tmp_path / "m.onnx"
    onnx.save(model, source)
    result = run_cli(["import", source, "--name", "m", "--out", tmp_path / "models"])
    assert result.rc == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert tree(tmp_path / "models") == []
