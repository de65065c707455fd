"""The introspection handler: metadata, layers, filters, channels and samples, from memory."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import (
    NoFilters,
    NotFound,
)
from service.handlers.introspection import FilterState
from service.models.channel_view import NotComputed
from tests.support.images import png_bytes
from tests.support.services import HandlerSet

pytestmark = pytest.mark.anyio


def image(value: int = 128) -> bytes:
    return png_bytes(np.full((8, 8), value, dtype=np.uint8))


async def test_describe_and_layers(handlers: HandlerSet) -> None:
    described = handlers.introspection.describe("synthetic", None)
    assert described.model.version == 2 and described.available_versions == [1, 2, 3]
    assert described.metadata.layer_names == ["features.1", "features.2"] and described.provider
    catalogue = handlers.introspection.layers("synthetic", 1)
    assert [layer.name for layer in catalogue.layers] == ["features.1", "features.2"]
    assert catalogue.with_filters == {"features.1"} and catalogue.explanations is not None


async def test_filters_and_one_channels_filter(handlers: HandlerSet) -> None:
    trained = handlers.introspection.filters("synthetic", 1, "features.1")
    assert trained.weights.shape == (4, 1, 3, 3)
    initial = handlers.introspection.filters("synthetic", 1, "features.1", FilterState.INITIAL)
    assert not np.array_equal(initial.weights, trained.weights)
    with pytest.raises(NoFilters, match="layers with filters: features.1"):
        handlers.introspection.filters("synthetic", 1, "features.2")
    with pytest.raises(NotFound, match="no record of its filters before training"):
        handlers.introspection.filters("synthetic", 2, "features.1", FilterState.INITIAL)
    one = handlers.introspection.channel_filter("synthetic", 1, "features.1", 3)
    assert one.trained.shape == (1, 3, 3) and one.reads_image and one.conv == "conv"
    with pytest.raises(NotFound, match="has 4 channels; valid: 0..3, not 4"):
        handlers.introspection.channel_filter("synthetic", 1, "features.1", 4)


async def test_channels_and_samples_where_the_version_has_them(handlers: HandlerSet) -> None:
    top = handlers.introspection.channel("synthetic", 2, "features.1", 0)
    assert top.images == 40 and len(top.top) == 4
    sheet = handlers.introspection.top_sheet("synthetic", 2, "features.1", 0)
    assert sheet.make().startswith(b"\x89PNG") and sheet.make() is sheet.make()  # drawn once
    assert handlers.introspection.top_image("synthetic", 2, "features.1", 0, 0).make().startswith(b"\x89PNG")
    assert handlers.introspection.samples("synthetic", 2).labels == ["class_0"] * 3 + ["class_1"] * 3 + ["class_2"] * 3
    with pytest.raises(NotComputed, match="has no channel view"):
        handlers.introspection.channel("synthetic", 1, "features.1", 0)
