"""The handlers over a registry of synthetic artifacts: versions 1 and 2 of `synthetic` (2
with a channel view and samples, no initial weights), a failed version 3, and two models
whose class output is already probabilities or log-probabilities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.artifacts import write_artifact
from tests.support.services import HandlerSet, handlers_for


@pytest.fixture
async def handlers(tmp_path: Path) -> AsyncIterator[HandlerSet]:
    write_artifact(tmp_path, "synthetic", 1, seed=0)
    write_artifact(tmp_path, "synthetic", 2, seed=1, initial_weights=False, views=True)
    write_artifact(tmp_path, "probs", 1, seed=2, output_kind="probabilities")
    write_artifact(tmp_path, "logprobs", 1, seed=2, output_kind="log_probabilities")
    (tmp_path / "synthetic" / "3").mkdir()  # no metadata: failed
    async with handlers_for(tmp_path, max_images_per_request=4, max_feature_map_bytes=4096) as made:
        yield made
