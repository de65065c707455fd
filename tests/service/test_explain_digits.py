"""On the trained digits model: every method's map beats a random map of the same image.

onnxruntime plays the data plane's forward here (the HTTP version of this check belongs
with the explain endpoint). Each method runs with its default settings, as a request
without parameters would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.explain import METHODS, Explainer, ExplainRequest, describe
from service.preprocessing import InputSpec, preprocess
from tests.conftest import ExportedModel

DIGITS = 30
BAR = 0.8  # the share of digits whose map must beat chance (issue 12)


@pytest.fixture(scope="module")
def setup(digits_artifact: ExportedModel) -> tuple[Explainer, ort.InferenceSession, list[np.ndarray]]:
    path = digits_artifact.path / "model.onnx"
    explainer = Explainer(describe(digits_artifact.metadata, path), max_passes=2000, batch_size=64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = InputSpec.from_metadata(digits_artifact.metadata["input"])
    images = [preprocess(Image.fromarray(img), spec)[None] for img in digits_artifact.images[:DIGITS]]
    return explainer, session, images


@pytest.mark.parametrize("method", METHODS)
def test_maps_beat_a_random_map_on_most_held_out_digits(setup: tuple, method: str) -> None:
    explainer, session, images = setup

    async def forward(batch: np.ndarray, outputs: Sequence[str]) -> list[np.ndarray]:
        return list(session.run(list(outputs), {"input": batch}))

    plan = explainer.plan(ExplainRequest(method=method))

    async def explain_all() -> list[bool]:
        wins = []
        for image in images:
            result = await explainer.run(plan, image, forward)
            assert result.faithfulness is not None and result.forward_passes <= plan.budget
            wins.append(result.faithfulness.beats_random)
        return wins

    wins = asyncio.run(explain_all())
    assert sum(wins) >= BAR * DIGITS, f"{method}: the map beat chance on {sum(wins)} of {DIGITS} digits"
