"""model.onnx as the export stage writes it: every large initializer's bytes on an ALIGNMENT
boundary, found where they are without parsing, and nothing else changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from artifact.onnx_file import ALIGN_MIN_BYTES, ALIGNMENT, WireFormatError, initializer_spans, write_model


def model_with(sizes: list[int], *, doc: str = "") -> onnx.ModelProto:
    """A graph summing float32 initializers of ``sizes`` elements each with its input, each
    first with a name of a different length, so that their bytes fall anywhere."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=n).astype(np.float32), "w" * (i + 1)) for i, n in enumerate(sizes)]
    nodes, last = [], "x"
    for i, tensor in enumerate(inits):
        shape = helper.make_node("Shape", [last], [f"s{i}"])
        nodes += [shape, helper.make_node("ReduceSum", [tensor.name], [f"r{i}"], keepdims=0),
                  helper.make_node("Add", [last, f"r{i}"], [f"y{i}"])]
        last = f"y{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.doc_string = doc
    return model


@pytest.mark.parametrize("sizes", [[2048, 7, 4096, 1030], [5, 1024, 1024, 3000, 9], [100_000, 1_100_000]])
def test_every_large_initializer_starts_on_a_boundary_and_the_model_is_the_same(tmp_path: Path,
                                                                                 sizes: list[int]) -> None:
    model = model_with(sizes, doc="the user's description")
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    write_model(model, tmp_path / "model.onnx")
    data = (tmp_path / "model.onnx").read_bytes()
    spans = initializer_spans(data)
    large = [t.name for t in expected.graph.initializer if len(t.raw_data) >= ALIGN_MIN_BYTES]
    assert large and all(spans[name][0] % ALIGNMENT == 0 for name in large)
    written = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(written)
    for before, after in zip(expected.graph.initializer, written.graph.initializer, strict=True):
        assert (before.name, before.raw_data) == (after.name, after.raw_data)
        assert after.doc_string.strip() == before.doc_string  # only padding added
        assert data[spans[after.name][0]:sum(spans[after.name])] == before.raw_data
    assert list(written.graph.node) == list(expected.graph.node)
    assert written.doc_string.strip() == "the user's description"


def test_without_alignment_the_bytes_fall_anywhere(tmp_path: Path) -> None:
    """The test above can fail: plain onnx.save leaves some large initializer off a boundary."""
    model = model_with([2048, 7, 4096, 1030])
    onnx.save(model, str(tmp_path / "plain.onnx"))
    spans = initializer_spans((tmp_path / "plain.onnx").read_bytes())
    assert any(offset % ALIGNMENT for offset, length in spans.values() if length >= ALIGN_MIN_BYTES)


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_a_cut_file_is_a_wire_format_error_not_a_crash(tmp_path: Path, cut: int) -> None:
    write_model(model_with([2048, 3000]), tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    with pytest.raises(WireFormatError):
        initializer_spans(data[:-cut] if cut < 100 else data[: len(data) // 2])
