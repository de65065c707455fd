"""A version's conv kernels before training (initial_weights.npz), read when first shown.

The explorer shows them beside the trained ones, one layer at a time and only when asked
("state=initial"); held from load, they were a float32 copy of every conv kernel in every
served version (10 MB for AlexNet, the same for its int8 version). Each layer's are read on
its first view and kept from then on, so a page's later views cost no read.

The file was checked against its sha256 when the version loaded (artifact.verify_files);
a file rewritten in place since then is not read: ArtifactChanged asks for a reload.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from service.errors import ArtifactChanged
from service.models.mapped_weights import FileIdentity


class InitialFilters(Mapping[str, np.ndarray]):
    """Kernels before training by layer name, each layer's read from ``path`` on first use.
    ``keys``: each layer's array in the file (a Conv and the ReLU after it share one)."""

    def __init__(self, path: Path | None = None, keys: Mapping[str, str] | None = None, *,
                 model: str = "", version: int = 0) -> None:
        self._path, self._keys = path, dict(keys or {})
        self._model, self._version = model, version
        self._identity = FileIdentity.of(path) if path is not None and self._keys else None
        self._read: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def listed(cls, path: Path | None, by_weight: Mapping[str, list[str]], *, model: str, version: int) -> InitialFilters:
        """The layers ``path`` has kernels for, from the file's list of arrays (its zip
        directory: no array is read)."""
        if path is None:
            return cls()
        with np.load(path, allow_pickle=False) as data:
            keys = {layer: key for key in data.files for layer in by_weight.get(key, [])}
        return cls(path, keys, model=model, version=version)

    def __getitem__(self, layer: str) -> np.ndarray:
        key = self._keys[layer]
        with self._lock:  # two first views of one layer read it once
            array = self._read.get(key)
            if array is None:
                array = self._load(key)
                self._read[key] = array
        return array

    def _load(self, key: str) -> np.ndarray:
        assert self._path is not None and self._identity is not None
        if not self._identity.unchanged(self._path):
            raise ArtifactChanged(self._model, self._version, self._path.name)
        with np.load(self._path, allow_pickle=False) as data:
            return np.asarray(data[key], dtype=np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
