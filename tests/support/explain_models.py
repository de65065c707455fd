"""A model with a known answer for the explanation tests, built with onnx.helper.

16 x 16 grey input. conv 3x3 (pad 1) with two filters: channel 0 averages the intensity,
channel 1 its negative -> relu ("features.1") -> conv 3x3 (pad 1) whose only non-zero
taps are the centre's, so it keeps the two channels (and, being a 3x3 conv, stops exact
gradients at features.1) -> relu ("features.3") -> max-pool 2 ("features.4", 8 x 8) -> flatten ("flat") -> dense.

Class 0's logit reads channel 0 of four pooled cells whose receptive field lies in input
rows and columns 3..8, so it depends on the image only inside ``REGION`` (rows and
columns 2..9). Classes 1 and 2 are constant. The test image has a bright square there
(class 0's evidence) and a dark square elsewhere, which the net sees (channel 1) but
class 0 ignores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from artifact import Metadata

SIZE = 16
REGION = (slice(2, 10), slice(2, 10))
LABELS = ["square", "other", "none"]


def _weights() -> dict[str, np.ndarray]:
    conv = np.zeros((2, 1, 3, 3), dtype=np.float32)
    conv[0] = 1 / 9
    conv[1] = -1 / 9
    mix = np.zeros((2, 2, 3, 3), dtype=np.float32)
    mix[:, :, 1, 1] = np.eye(2, dtype=np.float32)
    dense = np.zeros((3, 2, 8, 8), dtype=np.float32)
    dense[0, 0, 2:4, 2:4] = 0.5  # pooled cells 2..3 see input rows/cols 3..8
    bias = np.array([-2.0, 0.0, 0.0], dtype=np.float32)
    return {"conv1.weight": conv, "conv1.bias": np.zeros(2, np.float32), "conv2.weight": mix,
            "conv2.bias": np.zeros(2, np.float32), "fc.weight": dense.reshape(3, -1), "fc.bias": bias}


def _model(name: str, nodes: list[onnx.NodeProto], outputs: list[tuple[str, list[int]]],
           w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A checked opset-17 model of ``nodes``: one [batch, 1, SIZE, SIZE] input, ``outputs``
    (name, shape after the batch), the weights ``w`` as initializers."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", *shape]) for out, shape in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(head: str = "flatten") -> onnx.ModelProto:
    """``head="flatten"``: as described above. ``head="gap"``: global average pooling
    instead of the flatten (a ResNet-style head), weights averaged to match."""
    w = _weights()
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["features.1"]),
        helper.make_node("Conv", ["features.1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["features.3"]),
        helper.make_node("MaxPool", ["features.3"], ["features.4"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    outputs = [("logits", [3]), ("features.1", [2, SIZE, SIZE]), ("features.3", [2, SIZE, SIZE]),
               ("features.4", [2, 8, 8])]
    if head == "flatten":
        nodes += [
            helper.make_node("Flatten", ["features.4"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        ]
        outputs.append(("flat", [128]))
    else:
        w["fc.weight"] = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
        nodes += [
            helper.make_node("GlobalAveragePool", ["features.4"], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        ]
    return _model("known-answer", nodes, outputs, w)


def metadata(model: onnx.ModelProto, name: str = "known") -> Metadata:
    """The artifact metadata the engine reads (docs/artifact.md), for ``build``'s graph."""
    shapes = {o.name: [d.dim_value or -1 for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    return Metadata.model_validate({
        "schema_version": 1,
        "name": name,
        "labels": list(LABELS),
        "input": {"name": "input", "shape": [-1, 1, SIZE, SIZE], "channels": 1, "size": [SIZE, SIZE],
                  "scale": 1 / 255, "mean": [0.5], "std": [0.25], "resize": "bilinear"},
        "output": {"name": "logits", "shape": [-1, 3], "kind": "logits"},
        "layers": [{"name": n, "output_shape": shapes[n], "receptive_field": None, "stride": None}
                   for n in ("features.1", "features.3", "features.4", "flat") if n in shapes],
        "files": {"model.onnx": {"sha256": "0" * 64}},
    })


def image() -> np.ndarray:
    """[1, 1, 16, 16]: class 0's evidence inside REGION, a distractor outside it."""
    x = np.zeros((1, 1, SIZE, SIZE), dtype=np.float32)
    x[0, 0, 3:9, 3:9] = 2.0
    x[0, 0, 11:15, 11:15] = -1.0
    return x


@dataclass
class OrtForward:
    """The data plane's forward, played by onnxruntime; records every call."""

    model: onnx.ModelProto
    calls: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)
    session: ort.InferenceSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = ort.InferenceSession(self.model.SerializeToString(), providers=["CPUExecutionProvider"])

    async def __call__(self, batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        self.calls.append((int(batch.shape[0]), tuple(outputs)))
        await asyncio.sleep(0)  # a real forward always yields to the loop
        return list(self.session.run(list(outputs), {"input": batch}))

    @property
    def images(self) -> int:
        return sum(n for n, _ in self.calls)


# ---- a model whose evidence is two parts together ---------------------------------------
#
# "parts": 16 x 16 grey input; features.1 = relu(input) * a fixed mask per channel, so
# channel 0 sees only the top-left quadrant and channel 1 only the bottom-right one. A and B
# are the mean of channel 0 over PART_A and of channel 1 over PART_B. Class 0 ("whole")
# needs both parts, z0 = 4 min(A, B); class 1 ("part") answers to either, z1 = A + B;
# class 2 is constant, z2 = 0. PARTS_IMAGE shows both parts (A = B = 1): class 0 with P =
# 0.87. The blank baseline (A = B = 0) gives P(class 0) = 1/3, and an image that keeps one
# part only gives 0.21: less than the blank image, because one part alone looks like class
# 1, as a blob of a pagoda alone looks like a roof to an ImageNet net.

PART_A = (slice(2, 6), slice(2, 6))
PART_B = (slice(10, 14), slice(10, 14))
PARTS_LABELS = ["whole", "part", "none"]


def build_parts() -> onnx.ModelProto:
    mask = np.zeros((2, SIZE, SIZE), dtype=np.float32)
    mask[0, :8, :8] = 1
    mask[1, 8:, 8:] = 1
    pooling = np.zeros((2, 2, SIZE, SIZE), dtype=np.float32)
    pooling[0, 0][PART_A] = 1 / 16
    pooling[1, 1][PART_B] = 1 / 16
    w = {"conv1.weight": np.ones((2, 1, 1, 1), np.float32), "conv1.bias": np.zeros(2, np.float32),
         "mask": mask, "pool.weight": pooling.reshape(2, -1), "four": np.array(4.0, np.float32),
         "zero": np.array(0.0, np.float32), "a_index": np.array([0], np.int64), "b_index": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Mul", ["r1", "mask"], ["features.1"]),
        helper.make_node("Flatten", ["features.1"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "pool.weight"], ["ab"], transB=1),
        helper.make_node("Gather", ["ab", "a_index"], ["a"], axis=1),
        helper.make_node("Gather", ["ab", "b_index"], ["b"], axis=1),
        helper.make_node("Min", ["a", "b"], ["both"]),
        helper.make_node("Mul", ["both", "four"], ["z0"]),
        helper.make_node("Add", ["a", "b"], ["z1"]),
        helper.make_node("Mul", ["a", "zero"], ["z2"]),
        helper.make_node("Concat", ["z0", "z1", "z2"], ["logits"], axis=1),
    ]
    outputs = [("logits", [3]), ("features.1", [2, SIZE, SIZE])]
    return _model("parts", nodes, outputs, w)


def parts_metadata(model: onnx.ModelProto) -> Metadata:
    metadata = globals()["metadata"](model, name="parts")
    return metadata.model_copy(update={"labels": list(PARTS_LABELS)})


def parts_image() -> np.ndarray:
    """[1, 1, 16, 16]: both parts of class 0, nothing else."""
    x = np.zeros((1, 1, SIZE, SIZE), dtype=np.float32)
    x[0, 0][PART_A] = 1.0
    x[0, 0][PART_B] = 1.0
    return x
