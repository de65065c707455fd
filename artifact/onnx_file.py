"""model.onnx as the export stage writes it and the service reads it.

The service reads large weights in place from the file (service/models/mapped_weights.py):
a version's feature-map session, filters and explanation heads read them through a memory
map while its predictions session keeps its own, prepacked copy. A float32 array read in
place must start on a boundary every kernel accepts, and protobuf puts a tensor's bytes
wherever the fields before them end. So the export stage writes model.onnx with every
initializer of at least ``ALIGN_MIN_BYTES`` starting on an ``ALIGNMENT``-byte boundary
(``aligned_model_bytes``): the doc_string of the tensor before it (the model's for the
first), which protobuf writes after that tensor's bytes, is padded with spaces. Nothing
else changes: the graph, its weights and what any reader parses are the same; a file
written otherwise is read as before, its weights copied.

Both stages find the bytes with ``initializer_spans``, which walks the protobuf encoding
without parsing the weights.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

ALIGNMENT = 64
ALIGN_MIN_BYTES = 4096
# A carrier's padding stays within [_PAD_BASE, _PAD_BASE + ALIGNMENT): its length prefix
# keeps its size while the padding is adjusted.
_PAD_BASE = 128
_ALIGN_PASSES = 4


Buffer = bytes | mmap.mmap  # a file's bytes, read or mapped


# Field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.name
# and TensorProto.raw_data.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9
# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """The file is not a protobuf message this reader can walk."""


def _varint(buffer: Buffer, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise WireFormatError(f"a varint runs past the end at byte {position}")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _length_delimited(buffer: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of the message that spans
    ``start:end``; fields of other wire types are skipped."""
    position = start
    while position < end:
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _varint(buffer, position)
        elif wire_type == _FIXED64:
            position += 8
        elif wire_type == _FIXED32:
            position += 4
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(buffer, position)
            if position + length > end:
                raise WireFormatError(f"field {number} at byte {position} runs past its message")
            yield number, position, position + length
            position += length
        else:  # groups (3, 4) are not in onnx.proto
            raise WireFormatError(f"wire type {wire_type} at byte {position}")


def initializer_spans(buffer: Buffer) -> dict[str, tuple[int, int]]:
    """Where each graph initializer's ``raw_data`` lies in a serialized ModelProto: name ->
    (offset, length). Initializers stored otherwise (typed fields, external data) are absent."""
    spans: dict[str, tuple[int, int]] = {}
    for number, start, end in _length_delimited(buffer, 0, len(buffer)):
        if number != _MODEL_GRAPH:
            continue
        for field, tensor_start, tensor_end in _length_delimited(buffer, start, end):
            if field != _GRAPH_INITIALIZER:
                continue
            name, raw = None, None
            for item, item_start, item_end in _length_delimited(buffer, tensor_start, tensor_end):
                if item == _TENSOR_NAME:
                    name = bytes(buffer[item_start:item_end]).decode("utf-8", "replace")
                elif item == _TENSOR_RAW_DATA:
                    raw = (item_start, item_end - item_start)
            if name is not None and raw is not None:
                spans[name] = raw
    return spans


def aligned_model_bytes(model: onnx.ModelProto) -> bytes:
    """``model`` serialized with its large initializers' bytes on ``ALIGNMENT`` boundaries
    (the doc_strings before them padded; ``model`` is changed). A model whose alignment
    does not settle in a few passes (a length prefix that keeps growing a byte) is returned
    as it last serialized, its weights then copied by the service."""
    tensors = list(model.graph.initializer)
    carriers = [model, *tensors[:-1]]  # what protobuf writes just before each tensor's bytes
    large = [index for index, tensor in enumerate(tensors) if len(tensor.raw_data) >= ALIGN_MIN_BYTES]
    originals = {index: carriers[index].doc_string for index in large}
    pads = dict.fromkeys(large, 0)

    def serialize() -> bytes:
        for index, pad in pads.items():
            carriers[index].doc_string = originals[index] + " " * (_PAD_BASE + pad)
        serialized: bytes = model.SerializeToString()
        return serialized

    data = serialize()
    for _ in range(_ALIGN_PASSES):
        spans = initializer_spans(data)
        shift, settled = 0, True
        for index in large:  # in file order: each pad moves every tensor after it
            offset = spans[tensors[index].name][0] + shift
            if offset % ALIGNMENT:
                settled = False
                old = pads[index]
                pads[index] = (old - offset) % ALIGNMENT
                shift += pads[index] - old
        if settled:
            return data
        data = serialize()
    return data


def write_model(model: onnx.ModelProto, path: Path) -> None:
    """model.onnx, its large initializers aligned (``aligned_model_bytes``)."""
    path.write_bytes(aligned_model_bytes(model))
