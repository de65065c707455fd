"""Weights read in place from an ONNX file: where the protobuf keeps each initializer's
bytes, read-only views of them, the pages let go after load, and a file changed in place
refused rather than read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from artifact.onnx_file import initializer_spans
from service.errors import ArtifactChanged
from service.models.mapped_weights import MappedWeights
from tests.support.artifacts import build_model


def int8_model(path: Path) -> onnx.ModelProto:
    """A small model with an int8 initializer of 64 KB and a float32 one, saved to ``path``."""
    model, _ = build_model(channels=1, size=8, classes=3)
    weights = np.random.default_rng(0).integers(-128, 128, size=(256, 256), dtype=np.int8)
    model.graph.initializer.append(numpy_helper.from_array(weights, "dense_quantized"))
    onnx.save(model, str(path))
    return model


def test_every_raw_initializer_is_found_where_its_bytes_are(tmp_path: Path) -> None:
    model = int8_model(tmp_path / "m.onnx")
    data = (tmp_path / "m.onnx").read_bytes()
    spans = initializer_spans(data)
    raw = {t.name: t.raw_data for t in model.graph.initializer if t.raw_data}
    assert set(spans) == set(raw)
    for name, (offset, length) in spans.items():
        assert data[offset:offset + length] == raw[name]


def test_one_byte_weights_are_read_only_views_of_the_file_and_float_ones_are_not(tmp_path: Path) -> None:
    model = int8_model(tmp_path / "m.onnx")
    tensors = {t.name: t for t in model.graph.initializer}
    mapped = MappedWeights(tmp_path / "m.onnx", "m", 1)
    dense = tensors["dense_quantized"]
    view = mapped.view(dense.name, dense.raw_data, np.dtype(np.int8), tuple(dense.dims))
    assert view is not None and not view.flags.writeable and not view.flags.owndata
    np.testing.assert_array_equal(view, numpy_helper.to_array(dense))
    floats = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.raw_data)
    assert mapped.view(floats.name, floats.raw_data, np.dtype(np.float32), tuple(floats.dims)) is None
    # Bytes other than the file's (a graph changed after parsing) are never viewed as them.
    other = bytes(len(dense.raw_data))
    assert mapped.view(dense.name, other, np.dtype(np.int8), tuple(dense.dims)) is None
    assert mapped.names == {"dense_quantized"} and mapped.nbytes == 256 * 256


def resident_kb(path: Path) -> int:
    """This process's resident kB in mappings of ``path``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) >= 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_after_release_the_pages_read_at_load_are_no_longer_the_processs(tmp_path: Path) -> None:
    model = int8_model(tmp_path / "m.onnx")
    dense = next(t for t in model.graph.initializer if t.name == "dense_quantized")
    mapped = MappedWeights(tmp_path / "m.onnx", "m", 1)
    view = mapped.view(dense.name, dense.raw_data, np.dtype(np.int8), tuple(dense.dims))
    assert view is not None and int(view.sum()) == int(numpy_helper.to_array(dense).sum())  # read: resident
    assert resident_kb((tmp_path / "m.onnx").resolve()) >= 60
    mapped.release()
    assert resident_kb((tmp_path / "m.onnx").resolve()) == 0
    np.testing.assert_array_equal(view, numpy_helper.to_array(dense))  # and read again on demand


def test_a_file_changed_in_place_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    int8_model(path)
    mapped = MappedWeights(path, "digits", 2)
    mapped.check()
    data = bytearray(path.read_bytes())
    with path.open("r+b") as file:  # the same size, rewritten in place: the inode stays
        file.write(bytes(data[:16]))
    os.utime(path, ns=(0, 0))
    with pytest.raises(ArtifactChanged) as raised:
        mapped.check()
    assert raised.value.status_code == 500
    assert "model digits version 2: its m.onnx changed on disk" in raised.value.message
    assert "POST /v2/repository/models/digits/load" in raised.value.message
    path.unlink()
    with pytest.raises(ArtifactChanged):
        mapped.check()
