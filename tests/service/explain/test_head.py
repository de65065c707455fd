"""The numpy replay of a head: which graphs it accepts, and that it matches onnxruntime
(forward) and the function's own slopes (gradient) for every op it supports.

A piecewise-linear head's finite difference along a direction that stays inside one linear
piece equals the directional derivative exactly (up to float32 rounding). A smooth one's
central difference is within O(eps^2) of it: the tolerance below allows that and no more.
The comparison with PyTorch autograd, on what torch.onnx writes, is
tests/model_export/test_export_heads.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.explain.head import GradHead, NotExact, analyse_head

RNG = np.random.default_rng(0)
node = helper.make_node


def head_model(nodes: list[onnx.NodeProto], act_shape: list[int], classes: int, weights: dict[str, np.ndarray],
               opset: int = 18, output: str = "logits", extra_inputs: list[onnx.ValueInfoProto] | None = None
               ) -> onnx.ModelProto:
    """A graph from a layer ``act`` (a graph input here) to ``output``."""
    graph = helper.make_graph(
        nodes, "head",
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, act_shape), *(extra_inputs or [])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, classes])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    onnx.checker.check_model(model)
    return model


def w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return RNG.normal(0, scale, shape).astype(np.float32)


def check_replay(model: onnx.ModelProto, score: str | None = None, act_scale: float = 1.0, eps: float = 1e-3,
                 tolerance: float = 2e-3, feeds: dict[str, np.ndarray] | None = None) -> GradHead:
    """The head's forward equals onnxruntime's; its gradient, every target, the slope of
    onnxruntime's ``score`` (default: the class output) along random directions."""
    head = analyse_head(model, "act", model.graph.output[0].name)
    assert isinstance(head, GradHead), head
    output = model.graph.output[0].name
    score = score or output
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    act = (act_scale * RNG.normal(size=shape)).astype(np.float32)
    extra = feeds or {}
    names = [output] if score == output else [output, score]

    def run(x: np.ndarray) -> list[np.ndarray]:
        return list(session.run(names, {"act": x.astype(np.float32), **extra}))

    reference = run(act)[0]
    np.testing.assert_allclose(head.forward(act), reference, rtol=1e-5, atol=1e-6)
    for target in range(reference.shape[1]):
        values, gradient = head.gradient(act, target)
        np.testing.assert_allclose(values, reference, rtol=1e-5, atol=1e-6)
        assert gradient.shape == act.shape and gradient.dtype == np.float32
        for _ in range(3):
            direction = RNG.normal(size=shape)
            plus = run(act + eps * direction)[-1].reshape(-1)[target]
            minus = run(act - eps * direction)[-1].reshape(-1)[target]
            slope = (float(plus) - float(minus)) / (2 * eps)
            assert float((gradient * direction).sum()) == pytest.approx(slope, rel=tolerance, abs=tolerance)
    return head


# ---- piecewise-linear heads --------------------------------------------------------------

def pool_dense_head() -> onnx.ModelProto:
    """Max-pool with padding, batch norm, relu, average pool (padding not counted), flatten,
    dense + relu + dropout, matmul, bias, scale, divide: AlexNet's head and then some."""
    nodes = [
        node("MaxPool", ["act"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["p1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], epsilon=1e-3),
        node("Relu", ["bn"], ["r1"]),
        node("AveragePool", ["r1"], ["p2"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0], count_include_pad=0),
        node("Flatten", ["p2"], ["flat"], axis=1),
        node("Gemm", ["flat", "fc1.w", "fc1.b"], ["h1"], transB=1, alpha=0.5),
        node("Relu", ["h1"], ["r2"]),
        node("Dropout", ["r2"], ["d2"]),
        node("MatMul", ["d2", "fc2.w"], ["h2"]),
        node("Add", ["h2", "fc2.b"], ["h3"]),
        node("Mul", ["h3", "two"], ["h4"]),
        node("Div", ["h4", "three"], ["logits"]),
    ]
    weights = {
        "bn.s": RNG.uniform(0.5, 1.5, 3).astype(np.float32), "bn.b": w(3), "bn.m": w(3),
        "bn.v": RNG.uniform(0.5, 2, 3).astype(np.float32),
        "fc1.w": w(12, 3 * 4 * 4), "fc1.b": w(12), "fc2.w": w(12, 5), "fc2.b": w(5),
        "two": np.array(2.0, np.float32), "three": np.array([3.0], np.float32),
    }
    return head_model(nodes, [1, 3, 7, 7], 5, weights)


def global_pool_head() -> onnx.ModelProto:
    """ResNet's head with the shape computed at run time, as older exporters write it, a
    transpose, a reduce-mean, a subtraction and an identity."""
    nodes = [
        node("Transpose", ["act"], ["t"], perm=[0, 1, 3, 2]),
        node("ReduceMean", ["t", "axes"], ["m"], keepdims=1),
        node("Shape", ["m"], ["shape"]),
        node("Gather", ["shape", "zero"], ["batch"], axis=0),
        node("Unsqueeze", ["batch", "zero_axes"], ["batch1"]),
        node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        node("Reshape", ["m", "target"], ["flat"]),
        node("Gemm", ["flat", "fc.w"], ["h"]),
        node("GlobalAveragePool", ["act"], ["g"]),
        node("Squeeze", ["g", "sq_axes"], ["gs"]),
        node("Sub", ["h", "gs"], ["s"]),
        node("Identity", ["s"], ["logits"]),
    ]
    weights = {
        "axes": np.array([2, 3], np.int64), "zero": np.array(0, np.int64), "zero_axes": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64), "fc.w": w(4, 4), "sq_axes": np.array([2, 3], np.int64),
    }
    return head_model(nodes, [1, 4, 5, 6], 4, weights)


@pytest.mark.parametrize("build", [pool_dense_head, global_pool_head])
def test_the_replay_matches_onnxruntime_and_its_slopes(build: Callable[[], onnx.ModelProto]) -> None:
    check_replay(build())


def test_a_dense_head_after_flatten_is_its_weight_row() -> None:
    dense = w(3, 2 * 4 * 4)
    model = head_model([node("Flatten", ["act"], ["f"]), node("Gemm", ["f", "W"], ["logits"], transB=1)],
                       [1, 2, 4, 4], 3, {"W": dense})
    head = analyse_head(model, "act", "logits")
    assert isinstance(head, GradHead)
    _, gradient = head.gradient(RNG.normal(size=(1, 2, 4, 4)).astype(np.float32), 1)
    np.testing.assert_array_equal(gradient.reshape(-1), dense[1])


# ---- the ops of real heads, one at a time --------------------------------------------------

def activation_head(ops: list[onnx.NodeProto], weights: dict[str, np.ndarray] | None = None,
                    opset: int = 18, channels: int = 3) -> onnx.ModelProto:
    """act [1, C, 3, 3] -> ``ops`` (from "act" to "y", [1, C, 3, 3]) -> global pool -> dense."""
    nodes = [*ops, node("GlobalAveragePool", ["y"], ["g"]), node("Flatten", ["g"], ["f"]),
             node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1)]
    return head_model(nodes, [1, channels, 3, 3], 4, {"fc.w": w(4, channels, scale=1.0), "fc.b": w(4),
                                                      **(weights or {})}, opset=opset)


def scalar(value: float) -> np.ndarray:
    return np.array(value, np.float32)


SQRT2, HALF, ONE = scalar(2 ** 0.5), scalar(0.5), scalar(1.0)
KAPPA, BETA, THREE = scalar(0.044715), scalar((2 / np.pi) ** 0.5), scalar(3.0)

ACTIVATIONS: dict[str, tuple[list[onnx.NodeProto], dict[str, np.ndarray], int]] = {
    "relu6 (Clip, bounds as inputs)": ([node("Clip", ["act", "zero", "six"], ["y"])],
                                       {"zero": scalar(0), "six": scalar(6)}, 18),
    "relu6 (Clip, opset 9 attributes)": ([node("Clip", ["act"], ["y"], min=0.0, max=6.0)], {}, 9),
    "leaky relu": ([node("LeakyRelu", ["act"], ["y"], alpha=0.1)], {}, 18),
    "hardswish": ([node("HardSwish", ["act"], ["y"])], {}, 18),
    "hardsigmoid": ([node("HardSigmoid", ["act"], ["y"], alpha=1 / 6, beta=0.5)], {}, 18),
    "silu (x * sigmoid x)": ([node("Sigmoid", ["act"], ["s"]), node("Mul", ["act", "s"], ["y"])], {}, 18),
    "tanh": ([node("Tanh", ["act"], ["y"])], {}, 18),
    "gelu (opset 20)": ([node("Gelu", ["act"], ["y"])], {}, 20),
    "gelu tanh (opset 20)": ([node("Gelu", ["act"], ["y"], approximate="tanh")], {}, 20),
    "gelu, decomposed erf form": ([
        node("Div", ["act", "sqrt2"], ["d"]), node("Erf", ["d"], ["e"]), node("Add", ["e", "one"], ["a"]),
        node("Mul", ["act", "a"], ["m"]), node("Mul", ["m", "half"], ["y"])],
        {"sqrt2": SQRT2, "one": ONE, "half": HALF}, 17),
    "gelu, decomposed tanh form": ([
        node("Pow", ["act", "three"], ["cube"]), node("Mul", ["cube", "kappa"], ["k"]), node("Add", ["act", "k"], ["i"]),
        node("Mul", ["i", "beta"], ["b"]), node("Tanh", ["b"], ["t"]), node("Add", ["t", "one"], ["a"]),
        node("Mul", ["act", "a"], ["m"]), node("Mul", ["m", "half"], ["y"])],
        {"three": THREE, "kappa": KAPPA, "beta": BETA, "one": ONE, "half": HALF}, 17),
    "elu": ([node("Elu", ["act"], ["y"], alpha=0.7)], {}, 18),
    "mish, decomposed": ([node("Softplus", ["act"], ["sp"]), node("Tanh", ["sp"], ["t"]),
                          node("Mul", ["act", "t"], ["y"])], {}, 18),
    "batch norm + dropout": ([node("BatchNormalization", ["act", "s", "b", "m", "v"], ["bn"]),
                              node("Dropout", ["bn"], ["y"])],
                             {"s": w(3), "b": w(3), "m": w(3), "v": RNG.uniform(0.5, 2, 3).astype(np.float32)}, 18),
    "1x1 conv": ([node("Conv", ["act", "k", "kb"], ["y"], kernel_shape=[1, 1])], {"k": w(3, 3, 1, 1), "kb": w(3)}, 18),
    "channel softmax": ([node("Softmax", ["act"], ["y"], axis=1)], {}, 18),
    "squeeze-excite gate": ([
        node("GlobalAveragePool", ["act"], ["p"]), node("Conv", ["p", "se"], ["c"], kernel_shape=[1, 1]),
        node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5), node("Mul", ["h", "act"], ["y"])],
        {"se": w(3, 3, 1, 1, scale=1.0)}, 18),
    "layer norm over channels (ConvNeXt's LayerNorm2d)": ([
        node("Transpose", ["act"], ["t"], perm=[0, 2, 3, 1]),
        node("LayerNormalization", ["t", "ln.s", "ln.b"], ["n"], axis=-1, epsilon=1e-6),
        node("Transpose", ["n"], ["y"], perm=[0, 3, 1, 2])], {"ln.s": w(3, scale=1.0), "ln.b": w(3)}, 18),
    "layer norm, decomposed": ([
        node("ReduceMean", ["act", "c_axis"], ["mu"]), node("Sub", ["act", "mu"], ["d"]),
        node("Pow", ["d", "two"], ["sq"]), node("ReduceMean", ["sq", "c_axis"], ["var"]),
        node("Add", ["var", "eps"], ["ve"]), node("Sqrt", ["ve"], ["sd"]), node("Div", ["d", "sd"], ["n"]),
        node("Mul", ["n", "ln.s"], ["ns"]), node("Add", ["ns", "ln.b"], ["y"])],
        {"c_axis": np.array([1], np.int64), "two": scalar(2), "eps": scalar(1e-6),
         "ln.s": w(1, 3, 1, 1, scale=1.0), "ln.b": w(1, 3, 1, 1)}, 18),
    "slice, gather and concat of channels": ([
        node("Slice", ["act", "s0", "s1", "s_axis"], ["first"]), node("Gather", ["act", "idx"], ["picked"], axis=1),
        node("Concat", ["picked", "first"], ["y"], axis=1)],
        {"s0": np.array([0], np.int64), "s1": np.array([1], np.int64), "s_axis": np.array([1], np.int64),
         "idx": np.array([2, 0], np.int64)}, 18),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_each_op_of_a_real_head_matches_onnxruntime_and_its_slopes(name: str) -> None:
    ops, weights, opset = ACTIVATIONS[name]
    # scale 3: the inputs reach past HardSwish's and ReLU6's kinks and into the sigmoid's tails
    head = check_replay(activation_head(ops, weights, opset), act_scale=3.0)
    assert head.ops[-3:] == ("GlobalAveragePool", "Flatten", "Gemm")


# ---- shapes are not data paths ------------------------------------------------------------

def view_head(form: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``x.view(x.size(0), -1)`` as each torch.onnx exporter writes it: TorchScript reads the
    shape of the viewed value; dynamo without its optimizer the graph input's batch size,
    through a Shape of the input the head never replays (and a CastLike of a bound)."""
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    weights = {"fc.w": w(4, 12), "axes": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    if form == "torchscript":
        nodes = [node("AveragePool", ["act"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 node("Shape", ["p"], ["shape"]), node("Constant", [], ["zero"], value=numpy_helper.from_array(
                     np.array(0, np.int64))),
                 node("Gather", ["shape", "zero"], ["batch"], axis=0), node("Unsqueeze", ["batch", "axes"], ["b1"]),
                 node("Concat", ["b1", "minus_one"], ["target"], axis=0), node("Reshape", ["p", "target"], ["flat"])]
    else:
        nodes = [node("Shape", ["input"], ["in_shape"], start=0, end=1), node("Squeeze", ["in_shape"], ["batch"]),
                 node("Reshape", ["batch", "minus_one"], ["b1"]), node("Concat", ["b1", "minus_one"], ["target"], axis=0),
                 node("Constant", [], ["six"], value_float=6.0), node("CastLike", ["six", "act"], ["six_cast"]),
                 node("Clip", ["act", "", "six_cast"], ["clipped"]),
                 node("AveragePool", ["clipped"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 node("Reshape", ["p", "target"], ["flat"], allowzero=1)]
    nodes.append(node("Gemm", ["flat", "fc.w"], ["logits"], transB=1))
    model = head_model(nodes, [1, 3, 4, 4], 4, weights, extra_inputs=[image])
    return model, {"input": np.zeros((1, 3, 8, 8), np.float32)}


@pytest.mark.parametrize("form", ["torchscript", "dynamo"])
def test_a_view_by_the_batch_size_is_a_shape_not_a_data_path(form: str) -> None:
    model, feeds = view_head(form)
    head = check_replay(model, feeds=feeds)
    assert "Shape" not in head.ops and "Gather" not in head.ops and head.ops[-2:] == ("Reshape", "Gemm")


def test_a_shape_the_graph_leaves_open_is_refused_with_the_reason() -> None:
    model, _ = view_head("dynamo")
    model.graph.input[1].type.tensor_type.shape.dim[2].dim_param = "H"  # an input height not fixed
    result = analyse_head(model, "act", "logits")
    assert isinstance(result, NotExact) and "does not fix" in result.reason
    assert isinstance(analyse_head(model, "act", "logits", input_shapes={"input": (1, 3, 8, 8)}), GradHead)


# ---- the score before a final Softmax ---------------------------------------------------------

@pytest.mark.parametrize("final", [["Softmax"], ["LogSoftmax"], ["Sigmoid"], ["Softmax", "Flatten"]])
def test_a_final_softmax_is_not_differentiated_the_logit_before_it_is(final: list[str]) -> None:
    base = activation_head([node("Relu", ["act"], ["y"])])
    graph = base.graph
    graph.node[-1].output[0] = "scores"
    previous = "scores"
    for i, op in enumerate(final):
        graph.node.append(node(op, [previous], [f"f{i}"], **({"axis": 1} if op != "Sigmoid" else {})))
        previous = f"f{i}"
    graph.node[-1].output[0] = "probabilities"
    graph.output[0].name = "probabilities"
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4]))  # for onnxruntime
    head = check_replay(base, score="scores")
    assert head.score == "scores" and head.ops[-1] == "Gemm"
    logits = analyse_head(base, "act", "probabilities", logits="scores")
    assert isinstance(logits, GradHead) and logits.score == "scores"


# ---- what is refused, and why ---------------------------------------------------------------

@pytest.mark.parametrize("nodes, weights, reason", [
    ([node("Conv", ["act", "k"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
      node("Flatten", ["c"], ["f"]), node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"k": w(2, 2, 3, 3), "W": w(3, 32)}, r"Conv \(c\) is a 3x3 convolution.*tap a layer after it"),
    ([node("Floor", ["act"], ["s"]), node("Flatten", ["s"], ["f"]), node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, r"Floor \(s\) has no closed-form gradient.*exact at layers after it"),
    ([node("Flatten", ["act"], ["f"]), node("Gemm", ["W", "f"], ["logits"], transB=1)],
     {"W": w(3, 32)}, r"Gemm \(logits\) takes its weights from the layer's values"),
    ([node("Flatten", ["act"], ["f"]), node("Pow", ["f", "f"], ["p"]), node("Gemm", ["p", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, r"Pow \(p\) takes its exponent from the layer's values"),
    ([node("Flatten", ["act"], ["f"]), node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, None),
])
def test_heads_without_an_exact_gradient_are_refused_naming_the_op(nodes: list, weights: dict,
                                                                  reason: str | None) -> None:
    result = analyse_head(head_model(nodes, [1, 2, 4, 4], 3, weights), "act", "logits")
    if reason is None:
        assert isinstance(result, GradHead) and result.ops == ("Flatten", "Gemm")
    else:
        assert isinstance(result, NotExact)
        assert re.search(reason, result.reason), result.reason


def test_a_custom_op_is_named() -> None:
    nodes = [node("Flatten", ["act"], ["f"]), node("Swish", ["f"], ["s"], domain="com.example"),
             node("Gemm", ["s", "W"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("act", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
                              initializer=[numpy_helper.from_array(w(3, 32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    result = analyse_head(model, "act", "logits")
    assert isinstance(result, NotExact) and re.search(r"Swish \(s\) is a custom op \(domain 'com.example'\)",
                                                      result.reason)


def test_a_class_output_that_also_reads_the_image_elsewhere_is_refused() -> None:
    nodes = [
        node("Relu", ["input"], ["layer"]),
        node("Flatten", ["layer"], ["f"]),
        node("Flatten", ["input"], ["skip"]),
        node("Add", ["f", "skip"], ["both"]),
        node("Gemm", ["both", "W"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "bypass", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(w(2, 4), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = analyse_head(model, "layer", "logits")
    assert isinstance(result, NotExact) and "bypasses 'layer'" in result.reason and "skip connection" in result.reason
    unrelated = analyse_head(model, "skip", "logits")
    assert isinstance(unrelated, NotExact)


def test_heads_share_the_weights_they_load() -> None:
    model = pool_dense_head()
    cache: dict[str, np.ndarray] = {}
    first = analyse_head(model, "act", "logits", cache)
    second = analyse_head(model, "r1", "logits", cache)
    assert isinstance(first, GradHead) and isinstance(second, GradHead)
    assert first.constants["fc1.w"] is second.constants["fc1.w"]


# ---- int8 heads: Q/DQ pairs --------------------------------------------------------------

def int8_head(classes: int = 4, features: int = 12) -> tuple[onnx.ModelProto, np.ndarray]:
    """What onnxruntime's QDQ quantizer writes after a layer: the activations quantized and
    dequantized (zero point -128: the range starts at 0, a ReLU folded in), a Gemm on int8
    weights dequantized per output channel, its scores quantized and dequantized again.
    Also the dequantized weight, for the expected gradient."""
    weight = w(classes, features)
    scale = (np.abs(weight).max(axis=1) / 127).astype(np.float32)
    q_weight = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    nodes = [
        node("QuantizeLinear", ["act", "a.s", "a.z"], ["a.q"]),
        node("DequantizeLinear", ["a.q", "a.s", "a.z"], ["a.d"]),
        node("DequantizeLinear", ["fc.q", "fc.s", "fc.z"], ["fc.w"], axis=0),
        node("Gemm", ["a.d", "fc.w", "fc.b"], ["h"], transB=1),
        node("QuantizeLinear", ["h", "h.s", "h.z"], ["h.q"]),
        node("DequantizeLinear", ["h.q", "h.s", "h.z"], ["logits"]),
    ]
    weights = {
        "a.s": np.array(0.02, np.float32), "a.z": np.array(-128, np.int8),
        "fc.q": q_weight, "fc.s": scale, "fc.z": np.zeros(classes, np.int8), "fc.b": w(classes),
        "h.s": np.array(0.01, np.float32), "h.z": np.array(0, np.int8),
    }
    model = head_model(nodes, [1, features], classes, weights)
    return model, q_weight.astype(np.float32) * scale[:, None]


def test_quantize_and_dequantize_replay_exactly_as_onnxruntime_runs_them() -> None:
    model, _ = int8_head()
    head = analyse_head(model, "act", "logits")
    assert isinstance(head, GradHead) and "QuantizeLinear" in head.ops and "DequantizeLinear" in head.ops
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the pairs as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(5):
        act = (3 * RNG.normal(size=(1, 12))).astype(np.float32)  # past both ends of the range (0 .. 5.1)
        np.testing.assert_allclose(head.forward(act), session.run(None, {"act": act})[0], rtol=1e-6, atol=1e-6)


def test_the_gradient_through_a_pair_is_straight_through_but_a_folded_relus() -> None:
    model, weight = int8_head()
    head = analyse_head(model, "act", "logits")
    assert isinstance(head, GradHead)
    # Below 0 (the folded ReLU's side: no gradient), 0 itself, inside the range, above
    # 255 * 0.02 (saturated: the gradient goes straight through, as the float function's would).
    act = np.append(np.linspace(-1, 6, 11, dtype=np.float32), np.float32(0)).reshape(1, 12)
    for target in range(4):
        _, gradient = head.gradient(act, target)
        np.testing.assert_allclose(gradient, np.where(act >= 0, weight[target], 0), rtol=1e-5, atol=1e-7)
    # The scores' pair (zero point 0: its range does not start at 0) saturates at 127 * 0.01
    # and folds no ReLU: nothing was masked there.
    values, _ = head.gradient(act, 0)
    assert np.isclose(values, 127 * 0.01).any() or np.isclose(values, -128 * 0.01).any()


def test_a_large_int8_weight_is_dequantized_per_replay_not_kept_as_float(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.explain import head as head_module

    model, _ = int8_head()
    kept = analyse_head(model, "act", "logits")
    assert isinstance(kept, GradHead) and "fc.w" in kept.constants  # small: folded once
    monkeypatch.setattr(head_module, "LARGE_WEIGHT_BYTES", 1)
    replayed = analyse_head(model, "act", "logits")
    assert isinstance(replayed, GradHead)
    assert "fc.w" not in replayed.constants and replayed.constants["fc.q"].dtype == np.int8
    act = RNG.normal(size=(1, 12)).astype(np.float32)
    np.testing.assert_array_equal(replayed.forward(act), kept.forward(act))
