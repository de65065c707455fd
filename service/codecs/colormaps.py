"""The colour maps the server paints with, declared once: as a few RGB stops each,
interpolated to 256 entries (no plotting library), and which picture uses which. The
explorer reads the same stops from the layer catalogue and interpolates them the same way."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np

# Sequential, perceptually even: feature maps.
_VIRIDIS_STOPS = [
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
]
# Diverging, grey at zero: for filter weights, whose sign matters.
_COOLWARM_STOPS = [(59, 76, 192), (141, 176, 254), (221, 221, 221), (244, 154, 123), (180, 4, 38)]
# Sequential, black -> purple -> orange -> pale yellow: heat that stands out on grey
# and colour images alike (matplotlib's inferno, sampled).
_INFERNO_STOPS = [
    (0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66),
    (245, 125, 21), (250, 193, 39), (252, 255, 164),
]

COLORMAP_STOPS: dict[str, Sequence[tuple[int, int, int]]] = {
    "viridis": _VIRIDIS_STOPS,
    "coolwarm": _COOLWARM_STOPS,
    "inferno": _INFERNO_STOPS,
}
FEATURE_COLORMAP = "viridis"
FILTER_COLORMAP = "coolwarm"


class SaliencyColormap(StrEnum):
    """The colour maps an explanation's overlay may take (``colormap=``)."""

    INFERNO = "inferno"
    VIRIDIS = "viridis"


SALIENCY_COLORMAP = SaliencyColormap.INFERNO.value
SALIENCY_COLORMAPS: tuple[str, ...] = tuple(c.value for c in SaliencyColormap)


def _lut(stops: Sequence[tuple[int, int, int]]) -> np.ndarray:
    stops_arr = np.asarray(stops, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, 256)
    return np.stack(
        [np.interp(x, positions, stops_arr[:, c]) for c in range(3)], axis=1
    ).round().astype(np.uint8)


COLORMAPS: dict[str, np.ndarray] = {name: _lut(stops) for name, stops in COLORMAP_STOPS.items()}


def catalogue() -> dict[str, Any]:
    """The colour maps as stops, and which one each picture uses: the explorer paints feature
    maps and filters with these (its lib/colormap.mjs interpolates them as ``_lut`` does)."""
    return {
        "feature_maps": FEATURE_COLORMAP, "filters": FILTER_COLORMAP, "saliency": SALIENCY_COLORMAP,
        "saliency_choices": list(SALIENCY_COLORMAPS),
        "stops": {name: [list(stop) for stop in stops] for name, stops in COLORMAP_STOPS.items()},
    }
