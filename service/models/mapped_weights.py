"""Weights read in place from a version's ONNX file, through a read-only memory map.

The predictions (logits-only) session runs fastest on weights it prepacks into its own
layout: onnxruntime's fused int8 Gemm needs that, and a float Gemm at batch 1 ran 24%
slower on AlexNet without it. onnxruntime's Python API cannot share a prepacked copy
between sessions, so the features session, the filters and the explanation heads read
another copy, one predictions never touch. Mapped from model.onnx instead of copied out of
it, that copy costs memory only once a feature map, a filter or an explanation reads it, and
its pages are the page cache's: one copy for every worker process serving the version, and
clean, so the kernel takes them back under memory pressure and reads them again when needed.

A weight is read in place where its bytes in the file suit its type: a one-byte (int8)
weight anywhere, a wider one on an ``artifact.onnx_file.ALIGNMENT`` boundary, which the
export stage gives every large initializer. The weights of a file written otherwise are
copied as before.

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
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artifact.onnx_file import ALIGNMENT, initializer_spans
from service.errors import ArtifactChanged

# Bytes compared at a time when a view is checked against the parsed initializer.
_COMPARE_CHUNK = 1 << 20


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
        """A read-only view of the initializer ``name``'s bytes in the file, when they suit
        ``dtype`` where they are and are exactly ``raw_data`` (the bytes parsed from it);
        else None."""
        span = self._spans.get(name)
        if span is None or span[1] != len(raw_data):
            return None
        offset, length = span
        if dtype.itemsize > 1 and (offset % ALIGNMENT or sys.byteorder != "little"):
            return None  # the kernels want aligned arrays; the file's bytes are little-endian
        parsed = np.frombuffer(raw_data, dtype=np.uint8)
        for start in range(0, length, _COMPARE_CHUNK):  # in chunks: no second copy, even briefly
            stop = min(start + _COMPARE_CHUNK, length)
            if not np.array_equal(np.frombuffer(self._map, np.uint8, stop - start, offset + start), parsed[start:stop]):
                return None
        self._mapped.add(name)
        return np.frombuffer(self._map, dtype=dtype, count=length // dtype.itemsize, offset=offset).reshape(shape)

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
