"""Feature maps and filters in forms a person can look at (PNG grids) or a program can use
(``.npy`` bytes, nested lists, per-channel statistics)."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image


class Encoding(StrEnum):
    """How feature maps travel in a JSON answer."""

    STATS = "stats"  # per-channel min/max/mean
    PNG = "png"  # one grid picture per layer, base64
    NPY = "npy"  # .npy bytes, base64
    JSON = "json"  # nested lists


class NpyDtype(StrEnum):
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class FilterState(StrEnum):
    TRAINED = "trained"  # the learned kernels
    INITIAL = "initial"  # the random kernels before training (initial_weights.npz)

# Colour maps as a few stops, interpolated to 256 entries: no plotting library needed.
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
FEATURE_COLORMAP = "viridis"
FILTER_COLORMAP = "coolwarm"
SALIENCY_COLORMAP = "inferno"
SALIENCY_COLORMAPS: tuple[str, ...] = ("inferno", "viridis")
SALIENCY_ENCODINGS: tuple[str, ...] = ("json", "npy", "png")
OVERLAY_ALPHA = 0.6  # heat opacity where the map is 1; it fades with the map, so no evidence = the image
MIN_OVERLAY_PX = 224  # a 28 px digit's overlay is enlarged (nearest) to be seen

_BACKGROUND = (32, 32, 32)
MIN_TILE_PX = 24  # small maps (7x7) are enlarged (nearest) so a person can see them
MAX_GRID_PX = 2048  # ... but a grid never grows past this on its long side by enlarging


def _lut(stops: Sequence[tuple[int, int, int]]) -> np.ndarray:
    stops_arr = np.asarray(stops, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, 256)
    return np.stack(
        [np.interp(x, positions, stops_arr[:, c]) for c in range(3)], axis=1
    ).round().astype(np.uint8)


COLORMAP_STOPS: dict[str, Sequence[tuple[int, int, int]]] = {
    "viridis": _VIRIDIS_STOPS,
    "coolwarm": _COOLWARM_STOPS,
    "inferno": _INFERNO_STOPS,
}
COLORMAPS: dict[str, np.ndarray] = {name: _lut(stops) for name, stops in COLORMAP_STOPS.items()}


def colormap_catalogue() -> dict[str, Any]:
    """The colour maps as stops, and which one each picture uses: the explorer paints feature
    maps and filters with these (its lib/colormap.mjs interpolates them as ``_lut`` does)."""
    return {
        "feature_maps": FEATURE_COLORMAP, "filters": FILTER_COLORMAP, "saliency": SALIENCY_COLORMAP,
        "saliency_choices": list(SALIENCY_COLORMAPS),
        "stops": {name: [list(stop) for stop in stops] for name, stops in COLORMAP_STOPS.items()},
    }


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 3: a fraction of the default's CPU for a few percent more bytes.
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _as_channels(array: np.ndarray) -> np.ndarray:
    """[C, H, W] stays; a flat [F] layer becomes one near-square tile (NaN-padded)."""
    if array.ndim == 3:
        return array
    flat = array.reshape(-1)
    side = math.ceil(math.sqrt(flat.size))
    padded = np.full(side * side, np.nan, dtype=np.float32)
    padded[: flat.size] = flat
    return padded.reshape(1, side, side)


def _tile(tiles: np.ndarray, cols: int, scale: int) -> np.ndarray:
    """Tiles [N, h, w, 3] uint8 -> one grid image with 1 px gutters."""
    n, h, w, _ = tiles.shape
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = math.ceil(n / cols)
    grid = np.empty((rows * (h + 1) + 1, cols * (w + 1) + 1, 3), dtype=np.uint8)
    grid[...] = _BACKGROUND
    for i in range(n):
        r, c = divmod(i, cols)
        grid[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = tiles[i]
    return grid


def _scale_for(rows: int, cols: int, h: int, w: int) -> int:
    wanted = max(1, math.ceil(MIN_TILE_PX / max(1, min(h, w))))
    fits = max(1, (MAX_GRID_PX - 1) // max(rows * (h + 1), cols * (w + 1)))
    return max(1, min(wanted, fits))


def feature_map_grid(array: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """One image's layer output ([C,H,W] or [F]) as an RGB grid, channels tiled row by row,
    normalised over the whole layer so channels compare with each other."""
    channels = _as_channels(np.asarray(array, dtype=np.float32))
    c, h, w = channels.shape
    finite = channels[np.isfinite(channels)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    span = hi - lo if hi > lo else 1.0
    index = np.clip((channels - lo) / span * 255.0, 0, 255)
    index = np.nan_to_num(index, nan=0.0).astype(np.uint8)
    rgb = COLORMAPS[FEATURE_COLORMAP][index]
    rgb[~np.isfinite(channels)] = _BACKGROUND
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    scale = _scale_for(rows, cols, h, w)
    info = {
        "colormap": FEATURE_COLORMAP,
        "range": [lo, hi],
        "grid": [rows, cols],
        "tile": [h * scale, w * scale],
        "channels": c,
    }
    return _tile(rgb, cols, scale), info


def filters_grid(weights: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Conv kernels [O, I, kh, kw] as a picture.

    Three input channels: one colour tile per filter (AlexNet's famous first layer),
    grey = 0. One input channel: one tile per filter in a diverging colour map centred on 0.
    Otherwise: one row per filter, one column per input channel, in that colour map. All
    normalised by the layer's largest |weight|.
    """
    weights = np.asarray(weights, dtype=np.float32)
    out_c, in_c, kh, kw = weights.shape
    peak = float(np.abs(weights).max()) or 1.0
    if in_c == 3:
        rgb = np.clip(0.5 + weights.transpose(0, 2, 3, 1) / (2 * peak), 0, 1)
        tiles = (rgb * 255).round().astype(np.uint8)
        cols = math.ceil(math.sqrt(out_c))
        rows = math.ceil(out_c / cols)
        layout, colormap = "rgb", "rgb (grey = 0)"
    elif in_c == 1:  # a greyscale model's first layer: one tile per filter, in a square
        index = np.clip((weights[:, 0] / peak + 1.0) * 127.5, 0, 255).astype(np.uint8)
        tiles = COLORMAPS[FILTER_COLORMAP][index]
        cols = math.ceil(math.sqrt(out_c))
        rows = math.ceil(out_c / cols)
        layout, colormap = "filters", FILTER_COLORMAP
    else:
        index = np.clip((weights / peak + 1.0) * 127.5, 0, 255).astype(np.uint8)
        tiles = COLORMAPS[FILTER_COLORMAP][index.reshape(out_c * in_c, kh, kw)]
        cols, rows = in_c, out_c
        layout, colormap = "filters x input channels", FILTER_COLORMAP
    scale = _scale_for(rows, cols, kh, kw)
    info = {
        "layout": layout,
        "colormap": colormap,
        "range": [-peak, peak],
        "grid": [rows, cols],
        "filters": out_c,
        "kernel": [kh, kw],
    }
    return _tile(tiles, cols, scale), info


def estimate_bytes(shape: Sequence[int], encoding: str, dtype: str) -> int:
    """Roughly how many response bytes one image's map of ``shape`` costs (no batch dim)."""
    numel = math.prod(shape)
    channels = shape[0] if len(shape) == 3 else 1
    if encoding == "stats":
        return 3 * 24 * (channels if len(shape) == 3 else numel) + 64
    if encoding == "npy":
        return (numel * (2 if dtype == "float16" else 4) + 128) * 4 // 3
    if encoding == "json":
        return numel * 12
    # png: at most 3 bytes a grid pixel before compression, base64 on top.
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (math.isqrt(numel) + 1,) * 2
    cols = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / cols)
    scale = _scale_for(rows, cols, h, w)
    return (rows * (h * scale + 1) * cols * (w * scale + 1) * 3) * 4 // 3


def encode_feature_map(array: NDArray[Any], encoding: Encoding, dtype: NpyDtype = NpyDtype.FLOAT32) -> dict[str, Any]:
    """One image's layer output in the requested encoding, ready for JSON."""
    array = np.asarray(array)
    result: dict[str, Any] = {"shape": list(array.shape), "encoding": encoding}
    if encoding == "stats":
        per_channel = array.reshape(array.shape[0], -1) if array.ndim == 3 else array.reshape(-1, 1)
        result["stats"] = {
            "min": per_channel.min(axis=1).astype(float).tolist(),
            "max": per_channel.max(axis=1).astype(float).tolist(),
            "mean": per_channel.mean(axis=1, dtype=np.float64).tolist(),
        }
    elif encoding == "png":
        grid, info = feature_map_grid(array)
        result.update(info)
        result["data"] = base64.b64encode(png_bytes(grid)).decode("ascii")
    elif encoding == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.dtype(dtype)), allow_pickle=False)
        result["dtype"] = dtype
        result["data"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    elif encoding == "json":
        result["data"] = array.astype(np.float32).tolist()
    else:  # guarded by the API's validation; a programming error if reached
        raise ValueError(f"unknown encoding {encoding!r}")
    return result


def input_image(tensor: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float) -> np.ndarray:
    """A preprocessed input [C, H, W] back to the RGB uint8 [H, W, 3] picture the model saw
    (resized, before normalisation): pixel = (x * std + mean) / scale."""
    c = tensor.shape[0]
    pixels = (tensor * np.asarray(std, np.float32).reshape(c, 1, 1)
              + np.asarray(mean, np.float32).reshape(c, 1, 1)) / scale
    rgb = np.clip(pixels, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(rgb, 3, axis=2) if c == 1 else rgb


def saliency_overlay(image: np.ndarray, saliency: np.ndarray, colormap: str = SALIENCY_COLORMAP) -> tuple[np.ndarray, dict[str, Any]]:
    """A saliency map (0..1, [H, W]) as heat over the image it explains ([H, W, 3] uint8).

    The heat's opacity follows the map (``OVERLAY_ALPHA`` at 1, none at 0), so the parts
    of the image with no evidence show as they are. Small inputs are enlarged by a whole
    factor (nearest) to at least ``MIN_OVERLAY_PX`` on their short side.
    """
    if colormap not in SALIENCY_COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; valid: {', '.join(SALIENCY_COLORMAPS)}")
    if saliency.shape != image.shape[:2]:
        raise ValueError(f"map {list(saliency.shape)} and image {list(image.shape[:2])} differ in size")
    level = np.clip(np.nan_to_num(saliency.astype(np.float32)), 0.0, 1.0)
    heat = COLORMAPS[colormap][(level * 255).round().astype(np.uint8)].astype(np.float32)
    alpha = OVERLAY_ALPHA * level[..., None]
    rgb = (image.astype(np.float32) * (1 - alpha) + heat * alpha).round().astype(np.uint8)
    h, w = level.shape
    factor = max(1, min(math.ceil(MIN_OVERLAY_PX / max(1, min(h, w))), MAX_GRID_PX // max(h, w)))
    if factor > 1:
        rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
    info = {"colormap": colormap, "alpha": OVERLAY_ALPHA, "range": [0.0, 1.0], "scale": factor,
            "size": [h * factor, w * factor]}
    return rgb, info


def encode_saliency(saliency: np.ndarray, encoding: str, image: np.ndarray | None = None,
                    colormap: str = SALIENCY_COLORMAP) -> dict[str, Any]:
    """An explanation's map in the answer's form, like a feature map's: ``json`` nested
    lists, ``npy`` base64 .npy bytes, ``png`` base64 overlay on ``image`` with its colormap."""
    if encoding == "png":
        if image is None:
            raise ValueError("a png map needs the input image to overlay")
        rgb, info = saliency_overlay(image, saliency, colormap)
        return {"shape": list(saliency.shape), "encoding": "png", **info,
                "data": base64.b64encode(png_bytes(rgb)).decode("ascii")}
    if encoding not in SALIENCY_ENCODINGS:  # the API's validation keeps this unreachable
        raise ValueError(f"unknown encoding {encoding!r} for a map; valid: {', '.join(SALIENCY_ENCODINGS)}")
    return encode_feature_map(saliency, Encoding(encoding))
