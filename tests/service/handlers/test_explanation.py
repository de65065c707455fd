"""The explanation handler: the map and what is needed to draw it, errors naming the valid."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import (
    NotFound,
    UnknownVersion,
)
from service.explain import ExplainRequest
from tests.support.images import png_bytes
from tests.support.services import HandlerSet

pytestmark = pytest.mark.anyio


def image(value: int = 128) -> bytes:
    return png_bytes(np.full((8, 8), value, dtype=np.uint8))


async def test_explain_returns_the_map_with_the_recipe_to_draw_it(handlers: HandlerSet) -> None:
    done = await handlers.explanation.explain("synthetic", 1, image(200),
                                              ExplainRequest(method="grad-cam", faithfulness=False))
    assert done.model.version == 1 and done.result.explanation.map.shape == (8, 8)
    assert done.spec.channels == 1
    with pytest.raises(NotFound, match="unknown layer 'nope'; valid: features.1, features.2 for grad-cam"):
        await handlers.explanation.explain("synthetic", 1, image(), ExplainRequest(method="grad-cam", layer="nope"))
    with pytest.raises(UnknownVersion, match="valid: 1, 2, 3"):
        await handlers.explanation.explain("synthetic", 9, image(), ExplainRequest())
