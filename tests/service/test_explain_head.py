"""The numpy replay of a head: which graphs it accepts, and that it matches onnxruntime
(forward) and the function's own slopes (gradient) for every op it supports.

A head of these ops is piecewise linear, so a finite difference along a direction that
stays inside one linear piece equals the directional derivative exactly (up to float32
rounding): no approximation to tune a tolerance around.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.explain.head import GradHead, NotExact, analyse_head

RNG = np.random.default_rng(0)


def head_model(nodes: list[onnx.NodeProto], act_shape: list[int], classes: int,
               weights: dict[str, np.ndarray], opset: int = 18) -> onnx.ModelProto:
    """A graph from a layer ``act`` (a graph input here) to ``logits``."""
    graph = helper.make_graph(
        nodes, "head",
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, act_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return RNG.normal(0, scale, shape).astype(np.float32)


def pool_dense_head() -> onnx.ModelProto:
    """Max-pool with padding, batch norm, relu, average pool (padding not counted), flatten,
    dense + relu + dropout, matmul, bias, scale, divide: AlexNet's head and then some."""
    nodes = [
        helper.make_node("MaxPool", ["act"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["p1", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["p2"], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0],
                         count_include_pad=0),
        helper.make_node("Flatten", ["p2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc1.w", "fc1.b"], ["h1"], transB=1, alpha=0.5),
        helper.make_node("Relu", ["h1"], ["r2"]),
        helper.make_node("Dropout", ["r2"], ["d2"]),
        helper.make_node("MatMul", ["d2", "fc2.w"], ["h2"]),
        helper.make_node("Add", ["h2", "fc2.b"], ["h3"]),
        helper.make_node("Mul", ["h3", "two"], ["h4"]),
        helper.make_node("Div", ["h4", "three"], ["logits"]),
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
        helper.make_node("Transpose", ["act"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("ReduceMean", ["t", "axes"], ["m"], keepdims=1),
        helper.make_node("Shape", ["m"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["m", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w"], ["h"]),
        helper.make_node("GlobalAveragePool", ["act"], ["g"]),
        helper.make_node("Squeeze", ["g", "sq_axes"], ["gs"]),
        helper.make_node("Sub", ["h", "gs"], ["s"]),
        helper.make_node("Identity", ["s"], ["logits"]),
    ]
    weights = {
        "axes": np.array([2, 3], np.int64), "zero": np.array(0, np.int64), "zero_axes": np.array([0], np.int64),
        "minus_one": np.array([-1], np.int64), "fc.w": w(4, 4), "sq_axes": np.array([2, 3], np.int64),
    }
    return head_model(nodes, [1, 4, 5, 6], 4, weights)


@pytest.mark.parametrize("build", [pool_dense_head, global_pool_head])
def test_the_replay_matches_onnxruntime_and_its_slopes(build: object) -> None:
    model = build()  # type: ignore[operator]
    head = analyse_head(model, "act", "logits")
    assert isinstance(head, GradHead)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    act = RNG.normal(size=shape).astype(np.float32)
    (reference,) = session.run(["logits"], {"act": act})
    np.testing.assert_allclose(head.forward(act), reference, rtol=1e-5, atol=1e-6)
    for target in range(reference.shape[1]):
        logits, gradient = head.gradient(act, target)
        np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-6)
        assert gradient.shape == act.shape and gradient.dtype == np.float32
        for _ in range(3):
            direction = RNG.normal(size=shape)
            eps = 1e-3
            plus = session.run(["logits"], {"act": (act + eps * direction).astype(np.float32)})[0][0, target]
            minus = session.run(["logits"], {"act": (act - eps * direction).astype(np.float32)})[0][0, target]
            slope = (float(plus) - float(minus)) / (2 * eps)
            assert float((gradient * direction).sum()) == pytest.approx(slope, rel=2e-3, abs=2e-3)


def test_a_dense_head_after_flatten_is_its_weight_row() -> None:
    dense = w(3, 2 * 4 * 4)
    model = head_model([helper.make_node("Flatten", ["act"], ["f"]),
                        helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1)], [1, 2, 4, 4], 3, {"W": dense})
    head = analyse_head(model, "act", "logits")
    assert isinstance(head, GradHead)
    _, gradient = head.gradient(RNG.normal(size=(1, 2, 4, 4)).astype(np.float32), 1)
    np.testing.assert_array_equal(gradient.reshape(-1), dense[1])


@pytest.mark.parametrize("nodes, weights, reason", [
    ([helper.make_node("Conv", ["act", "k"], ["c"], kernel_shape=[1, 1]),
      helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"k": w(2, 2, 1, 1), "W": w(3, 32)}, "Conv .* is not linear or piecewise linear"),
    ([helper.make_node("Sigmoid", ["act"], ["s"]),
      helper.make_node("Flatten", ["s"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, "Sigmoid .* is not linear"),
    ([helper.make_node("Flatten", ["act"], ["f"]), helper.make_node("Mul", ["f", "f"], ["sq"]),
      helper.make_node("Gemm", ["sq", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, "multiplies two layer-dependent values"),
    ([helper.make_node("Flatten", ["act"], ["f"]), helper.make_node("Gemm", ["W", "f"], ["logits"], transB=1)],
     {"W": w(3, 32)}, "takes the layer's values as its weights"),
    ([helper.make_node("Flatten", ["act"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1)],
     {"W": w(3, 32)}, None),
])
def test_heads_that_are_not_piecewise_linear_are_refused_with_the_reason(nodes: list, weights: dict,
                                                                          reason: str | None) -> None:
    result = analyse_head(head_model(nodes, [1, 2, 4, 4], 3, weights), "act", "logits")
    if reason is None:
        assert isinstance(result, GradHead) and result.ops == ("Flatten", "Gemm")
    else:
        assert isinstance(result, NotExact)
        import re

        assert re.search(reason, result.reason), result.reason


def test_a_class_output_that_also_reads_the_image_elsewhere_is_refused() -> None:
    nodes = [
        helper.make_node("Relu", ["input"], ["layer"]),
        helper.make_node("Flatten", ["layer"], ["f"]),
        helper.make_node("Flatten", ["input"], ["skip"]),
        helper.make_node("Add", ["f", "skip"], ["both"]),
        helper.make_node("Gemm", ["both", "W"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "bypass", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(w(2, 4), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    result = analyse_head(model, "layer", "logits")
    assert isinstance(result, NotExact) and "bypasses 'layer'" in result.reason
    unrelated = analyse_head(model, "skip", "logits")
    assert isinstance(unrelated, NotExact)


def test_heads_share_the_weights_they_load() -> None:
    model = pool_dense_head()
    cache: dict[str, np.ndarray] = {}
    first = analyse_head(model, "act", "logits", cache)
    second = analyse_head(model, "r1", "logits", cache)
    assert isinstance(first, GradHead) and isinstance(second, GradHead)
    assert first._constants["fc1.w"] is second._constants["fc1.w"]
