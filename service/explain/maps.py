"""Array helpers shared by the methods: resizing maps, normalising them, blending images."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def resize_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] weights of bilinear resizing along one axis with pixel centres aligned
    (OpenCV's and PIL's convention, PyTorch's ``align_corners=False``); edges clamp."""
    out = np.zeros((dst, src), dtype=np.float32)
    position = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    position = np.clip(position, 0, src - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, src - 1)
    frac = (position - low).astype(np.float32)
    rows = np.arange(dst)
    np.add.at(out, (rows, low), 1 - frac)
    np.add.at(out, (rows, high), frac)
    out.flags.writeable = False
    return out


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``maps`` ([..., h, w]) to ``size`` (H, W)."""
    rows = resize_matrix(maps.shape[-2], size[0])
    cols = resize_matrix(maps.shape[-1], size[1])
    out: np.ndarray = np.einsum("Hh,...hw,Ww->...HW", rows, maps.astype(np.float32, copy=False), cols, optimize=True)
    return out


def evidence(raw: np.ndarray) -> np.ndarray:
    """A signed importance map -> 0..1, higher = more evidence for the target.

    Negative values (evidence against the target) become 0, then the map is divided by
    its maximum; a map with no positive value is all zeros (the method found no evidence).
    """
    positive = np.maximum(np.nan_to_num(raw.astype(np.float32), nan=0.0), 0.0)
    peak = float(positive.max()) if positive.size else 0.0
    if peak <= 0.0:
        return np.zeros_like(positive)
    return positive / peak


def blend(image: np.ndarray, baseline: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``image * keep + baseline * (1 - keep)`` for a batch of masks.

    image [C, H, W], baseline [C, 1, 1] or [C, H, W], keep [N, H, W] in 0..1 -> [N, C, H, W].
    """
    keep = keep[:, None, :, :].astype(np.float32, copy=False)
    out: np.ndarray = (baseline + keep * (image - baseline)[None]).astype(np.float32, copy=False)
    return out

