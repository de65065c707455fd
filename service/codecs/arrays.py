"""Arrays in a JSON answer: per-channel statistics, a PNG grid, ``.npy`` bytes or nested
lists (base64 for the binary ones), and what each costs before it is made."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.codecs.colormaps import SALIENCY_COLORMAP
from service.codecs.pictures import feature_map_grid, grid_scale, png_bytes, saliency_overlay


class Encoding(StrEnum):
    """How feature maps travel in a JSON answer."""

    STATS = "stats"  # per-channel min/max/mean
    PNG = "png"  # one grid picture per layer, base64
    NPY = "npy"  # .npy bytes, base64
    JSON = "json"  # nested lists


class NpyDtype(StrEnum):
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class MapEncoding(StrEnum):
    """How an explanation's map travels in a JSON answer (as a feature map does in predict's)."""

    JSON = "json"  # nested lists, H x W
    NPY = "npy"  # base64 .npy bytes, float32
    PNG = "png"  # base64 PNG: the map as heat over the preprocessed input image


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
    scale = grid_scale(rows, cols, h, w)
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
    if encoding not in tuple(MapEncoding):  # the API's validation keeps this unreachable
        raise ValueError(f"unknown encoding {encoding!r} for a map; valid: {', '.join(MapEncoding)}")
    return encode_feature_map(saliency, Encoding(encoding))
