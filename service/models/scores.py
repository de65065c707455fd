"""What a user reads from a model's class output: one probability per class, made from the
values the graph answers according to what they are (``artifact.OutputKind``).

The one place this is decided, so a graph that already ends in Softmax is never softmaxed a
second time: predictions and every explanation score (occlusion, RISE, Score-CAM,
faithfulness) read the class output through ``probabilities``. Only numpy and the
artifact's enum: both stages may import it.
"""

from __future__ import annotations

import numpy as np

from artifact import OutputKind


def probabilities(values: np.ndarray, kind: OutputKind) -> np.ndarray:
    """The class output's ``values`` ([..., classes]) as probabilities, float64, same shape.

    - ``logits``: softmax over the classes (the last axis);
    - ``probabilities``: as they are (the graph ends in Softmax);
    - ``log_probabilities``: ``exp`` of them (the graph ends in LogSoftmax);
    - ``multilabel``: as they are, each class's own score (the graph ends in Sigmoid):
      independent of the other classes, so they need not sum to 1.
    """
    scores = np.asarray(values, dtype=np.float64)
    if kind is OutputKind.LOGITS:
        return softmax(scores)
    if kind is OutputKind.LOG_PROBABILITIES:
        out: np.ndarray = np.exp(scores)
        return out
    if kind in (OutputKind.PROBABILITIES, OutputKind.MULTILABEL):
        return scores
    raise ValueError(f"unknown output kind {kind!r}; valid: {', '.join(k.value for k in OutputKind)}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64, stable for any logit size."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    out: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return out
