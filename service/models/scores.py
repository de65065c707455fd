"""What a class output means to a person: turned into per-class scores once, here, for
predictions, the Open Inference Protocol's classification extension and explanations alike.
Never a second softmax: a graph that ends in Softmax already gives probabilities."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from artifact import OutputKind


def softmax(logits: NDArray[np.floating]) -> NDArray[np.float64]:
    """Over the last axis, in float64 (stable for logits in the hundreds)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def probabilities(values: NDArray[np.floating], kind: OutputKind) -> NDArray[np.float64]:
    """The class output's values as scores in 0..1: a distribution over the classes, or for
    a multi-label model each class's own probability."""
    if kind is OutputKind.LOGITS:
        return softmax(values)
    if kind is OutputKind.LOG_PROBABILITIES:
        return np.exp(values.astype(np.float64))
    return values.astype(np.float64)  # probabilities, or independent (sigmoid) scores
