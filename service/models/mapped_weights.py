"""Weights read in place from a version's ONNX file, through a read-only memory map.

An int8 version holds its weights twice: the logits session prepacks its own copy for its
fused integer kernels (onnxruntime's Python API cannot share a prepacked buffer between
sessions), and the features session, the filters and the explanation heads read a second
copy that predictions never touch (docs/artifact.md, "int8 versions"). For an int8 AlexNet
that second copy is 54 MB, a fifth of the idle process. Mapped from model.onnx instead of
copied out of it, it costs memory only once a feature map, a filter or an explanation reads
it, and its pages are the page cache's: one copy for every worker process serving the
version, and clean, so the kernel takes them back under memory pressure and reads them
again when they are needed.

Only one-byte weights are mapped. A float32's bytes in an ONNX file start wherever the
protobuf encoding left them, and an unaligned array is not one to hand onnxruntime; float
weights are copied as before (and predictions read the float dense weights on every run,
so a map would save nothing at idle).

A version's files do not change while it is served: the export stage writes a new version's
directory, and the registry checks every file's sha256 at load. A file rewritten in place
anyway would change what the features session reads behind the logits session's back, or
fault the process where it got shorter. So every read through the map first checks that the
file is still the one mapped (its inode, size and modification time: one ``stat``), and
otherwise fails with ``ArtifactChanged``, which asks for the version to be loaded again.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.errors import ArtifactChanged

# Field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.name
# and TensorProto.raw_data.
_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_NAME = 8
_TENSOR_RAW_DATA = 9
# Bytes compared at a time when a view is checked against the parsed initializer.
_COMPARE_CHUNK = 1 << 20
# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """The file is not a protobuf message this reader can walk."""


def _varint(buffer: mmap.mmap | bytes, position: int) -> tuple[int, int]:
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


def _length_delimited(buffer: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
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


def initializer_spans(buffer: mmap.mmap | bytes) -> dict[str, tuple[int, int]]:
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


@dataclass(frozen=True)
class FileIdentity:
    """What tells a file rewritten in place from the one read at load."""

    inode: int
    size: int
    modified_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        status = os.stat(path)
        return cls(status.st_ino, status.st_size, status.st_mtime_ns)

    def unchanged(self, path: Path) -> bool:
        try:
            return FileIdentity.of(path) == self
        except OSError:
            return False


class MappedWeights:
    """A read-only map of one ONNX file and the weights read from it in place."""

    def __init__(self, path: Path, model: str, version: int) -> None:
        self.path, self.model, self.version = path, model, version
        self.identity = FileIdentity.of(path)
        with path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._spans = initializer_spans(self._map)
        self._mapped: set[str] = set()

    def view(self, name: str, raw_data: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
        """A read-only view of the initializer ``name``'s bytes in the file, when it is a
        one-byte type and the file holds exactly ``raw_data`` (the bytes parsed from it) there;
        else None."""
        span = self._spans.get(name)
        if span is None or dtype.itemsize != 1 or span[1] != len(raw_data):
            return None
        offset, length = span
        parsed = np.frombuffer(raw_data, dtype=np.uint8)
        for start in range(0, length, _COMPARE_CHUNK):  # in chunks: no second copy, even briefly
            stop = min(start + _COMPARE_CHUNK, length)
            if not np.array_equal(np.frombuffer(self._map, np.uint8, stop - start, offset + start), parsed[start:stop]):
                return None
        self._mapped.add(name)
        return np.frombuffer(self._map, dtype=dtype, count=length, offset=offset).reshape(shape)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._mapped)

    @property
    def nbytes(self) -> int:
        return sum(self._spans[name][1] for name in self._mapped)

    def release(self) -> None:
        """Let go of the pages that loading read (the checks that compare the sessions, the
        warm-up): the next read faults them back in from the page cache, or the disk."""
        if self._mapped:
            self._map.madvise(mmap.MADV_DONTNEED)

    def check(self) -> None:
        """ArtifactChanged unless the file is still the one mapped."""
        if not self.identity.unchanged(self.path):
            raise ArtifactChanged(self.model, self.version, self.path.name)
