"""A model exported by the real CLI, as the tests hold on to it (tests/conftest.py makes the
digits one once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExportedModel:
    """A model repository holding one exported version, plus held-out test images."""

    repository: Path  # the models/ root (CONVSCOPE_MODEL_REPOSITORY)
    name: str
    version: int
    path: Path  # repository / name / version
    metadata: dict[str, Any]
    images: np.ndarray  # uint8 held-out images at native size (N, 8, 8), grey
    labels: np.ndarray  # int64 class indices, labels[i] is images[i]'s class
    classes: list[str]
