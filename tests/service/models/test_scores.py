"""service/models/scores.py: the class output read by its kind, never softmaxed twice."""

from __future__ import annotations

import numpy as np
import pytest

from artifact import OutputKind
from service.models.scores import probabilities, softmax

LOGITS = np.array([[2.0, 0.0, -1.0], [100.0, 100.0, -50.0]], dtype=np.float32)


def test_logits_are_softmaxed_row_by_row_even_large_ones() -> None:
    read = probabilities(LOGITS, OutputKind.LOGITS)
    expected = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    np.testing.assert_allclose(read[0], expected, rtol=1e-12)
    np.testing.assert_allclose(read[1], [0.5, 0.5, 0.0], atol=1e-30)
    assert read.dtype == np.float64 and read.shape == LOGITS.shape


def test_a_softmax_output_is_read_as_it_is_and_a_log_softmax_output_exponentiated() -> None:
    probs = softmax(LOGITS)
    np.testing.assert_array_equal(probabilities(probs, OutputKind.PROBABILITIES), probs)
    np.testing.assert_allclose(probabilities(np.log(probs[:1]), OutputKind.LOG_PROBABILITIES), probs[:1], rtol=1e-12)


def test_multilabel_scores_are_each_classs_own() -> None:
    scores = np.array([[0.9, 0.8, 0.1]], dtype=np.float32)
    read = probabilities(scores, OutputKind.MULTILABEL)
    np.testing.assert_allclose(read, scores, rtol=1e-7)
    assert read.sum() == pytest.approx(1.8, rel=1e-6)  # not a distribution: never renormalised


def test_every_kind_is_handled() -> None:
    for kind in OutputKind:
        assert probabilities(np.full((1, 2), 0.5, np.float32), kind).shape == (1, 2)
