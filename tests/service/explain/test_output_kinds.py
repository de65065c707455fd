"""Explanations read the class output by its kind (artifact ``output.kind``): a graph that
ends in Softmax explains exactly like the same network answering logits, and a
multi-label (Sigmoid) one scores each class on its own."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from artifact import Metadata, OutputKind
from service.explain import Explainer, ExplainRequest, Explanation, describe
from tests.support import explain_models as km

pytestmark = pytest.mark.anyio

CLASSES = len(km.LABELS)
REQUESTS = [
    ExplainRequest(method="occlusion"),
    ExplainRequest(method="rise", passes=1 + 200 + 58),
    ExplainRequest(method="score-cam", layer="features.4"),
    ExplainRequest(method="grad-cam", layer="features.4"),
    ExplainRequest(method="hires-cam", layer="features.3"),
    ExplainRequest(method="eigen-cam", layer="features.4"),
]


def with_final(op: str | None, keep_logits: bool, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """The known model, with ``op`` (Softmax, LogSoftmax, Sigmoid) appended as the class
    output "scores"; ``keep_logits``: the logits stay a graph output (tapped, as the
    importer does where it can)."""
    model = km.build()
    if bias is not None:
        for init in model.graph.initializer:
            if init.name == "fc.bias":
                init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), "fc.bias"))
    if op is None:
        return model
    graph = model.graph
    attrs = {"axis": 1} if op != "Sigmoid" else {}
    graph.node.append(helper.make_node(op, ["logits"], ["scores"], **attrs))
    outputs = [o for o in graph.output if o.name != "logits" or keep_logits]
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", CLASSES]), *outputs])
    onnx.checker.check_model(model)
    return model


def metadata(model: onnx.ModelProto, kind: OutputKind, keep_logits: bool) -> Metadata:
    plain = km.metadata(km.build()).to_json()
    final = kind is not OutputKind.LOGITS
    plain["output"] = {"name": "scores" if final else "logits", "shape": [-1, CLASSES], "kind": kind.value,
                       "logits": "logits" if final and keep_logits else None}
    return Metadata.model_validate(plain)


async def explain(model: onnx.ModelProto, meta: Metadata, request: ExplainRequest) -> Explanation:
    explainer = Explainer(describe("known", meta, model), max_passes=2000, batch_size=8)
    return await explainer.run(explainer.plan(request), km.image(), km.OrtForward(model))


def same(a: Explanation, b: Explanation) -> None:
    """The same explanation, up to float32 rounding: the graph's own Softmax and the service's
    softmax of the logits differ by ~1e-7, which may swap the ranks of pixels whose map values
    tie but for that (occlusion's plateaus), moving a point of a faithfulness curve. A second
    softmax would move every point by a third or more (0.79 -> 0.52 here)."""
    assert a.target.index == b.target.index
    assert a.target.probability == pytest.approx(b.target.probability, abs=1e-6)
    np.testing.assert_allclose(a.map, b.map, atol=1e-5)
    assert a.forward_passes == b.forward_passes and a.parameters == b.parameters
    assert a.faithfulness is not None and b.faithfulness is not None
    for field in ("deletion", "insertion", "random_deletion"):
        assert getattr(a.faithfulness, field) == pytest.approx(getattr(b.faithfulness, field), abs=2e-3)
    for field in ("deletion_curve", "insertion_curve", "random_deletion_curve"):
        curve, expected = np.array(getattr(a.faithfulness, field)), np.array(getattr(b.faithfulness, field))
        np.testing.assert_allclose(curve[[0, -1]], expected[[0, -1]], atol=1e-6)
        assert np.sum(np.abs(curve - expected) > 1e-6) <= 2, field


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.method)
@pytest.mark.parametrize("op, kind", [("Softmax", OutputKind.PROBABILITIES),
                                      ("LogSoftmax", OutputKind.LOG_PROBABILITIES)])
@pytest.mark.parametrize("keep_logits", [True, False], ids=["logits tapped", "logits not tapped"])
async def test_a_graph_ending_in_softmax_explains_like_its_logits(request_: ExplainRequest, op: str,
                                                                  kind: OutputKind, keep_logits: bool) -> None:
    plain = with_final(None, False)
    reference = await explain(plain, metadata(plain, OutputKind.LOGITS, False), request_)
    model = with_final(op, keep_logits)
    result = await explain(model, metadata(model, kind, keep_logits), request_)
    same(result, reference)
    # never a second softmax: the served probability is the model's own
    assert result.target.probability == pytest.approx(np.exp(2) / (np.exp(2) + 2), rel=1e-6)


def sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


async def test_a_multilabel_model_scores_the_target_by_its_own_sigmoid() -> None:
    model = with_final("Sigmoid", True)
    result = await explain(model, metadata(model, OutputKind.MULTILABEL, True), ExplainRequest(method="occlusion"))
    assert result.target.index == 0
    assert result.target.probability == pytest.approx(float(sigmoid(2.0)), rel=1e-6)  # logit 2, bias -2 + 4
    assert result.faithfulness is not None
    assert result.faithfulness.deletion_curve[0] == pytest.approx(float(sigmoid(2.0)), rel=1e-6)
    assert result.faithfulness.deletion_curve[-1] == pytest.approx(float(sigmoid(-2.0)), rel=1e-6)  # baseline: the bias


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.method)
async def test_a_multilabel_class_is_explained_independently_of_the_others(request_: ExplainRequest) -> None:
    """Raising another class's score changes nothing about class 0's explanation when the
    scores are independent (Sigmoid), and changes it when they share a softmax."""
    other = np.array([-2.0, 3.0, 0.0])
    request = dataclasses.replace(request_, target=0)
    results = []
    for bias in (np.array([-2.0, 0.0, 0.0]), other):
        model = with_final("Sigmoid", False, bias)
        results.append(await explain(model, metadata(model, OutputKind.MULTILABEL, False), request))
    same(results[0], results[1])
    if request.method in ("occlusion", "score-cam"):
        softmaxed = [await explain(m, metadata(m, OutputKind.LOGITS, False), request)
                     for m in (with_final(None, False, b) for b in (np.array([-2.0, 0.0, 0.0]), other))]
        assert softmaxed[0].target.probability != pytest.approx(softmaxed[1].target.probability, abs=1e-3)


async def test_gradient_methods_differentiate_the_logit_before_the_final_activation() -> None:
    for op, kind in (("Softmax", OutputKind.PROBABILITIES), ("Sigmoid", OutputKind.MULTILABEL)):
        model = with_final(op, False)
        described = describe("known", metadata(model, kind, False), model)
        head = described.grad_head("features.4")
        assert head is not None and head.score == "logits" and head.output == "scores"
        result = await explain(model, metadata(model, kind, False), ExplainRequest(method="grad-cam"))
        assert result.parameters["score"] == "logits"
