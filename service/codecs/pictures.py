"""Pictures of what the model holds and does: feature maps and filters as PNG grids, the
input as the model saw it, an explanation's map as heat over it, and the sheet of the
images a channel responds to most. numpy and Pillow only."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.codecs.colormaps import COLORMAPS, FEATURE_COLORMAP, FILTER_COLORMAP, SALIENCY_COLORMAP, SALIENCY_COLORMAPS
from service.models.channel_view import StoredPicture

OVERLAY_ALPHA = 0.6  # heat opacity where the map is 1; it fades with the map, so no evidence = the image
MIN_OVERLAY_PX = 224  # a 28 px digit's overlay is enlarged (nearest) to be seen

_BACKGROUND = (32, 32, 32)
MIN_TILE_PX = 24  # small maps (7x7) are enlarged (nearest) so a person can see them
MAX_GRID_PX = 2048  # ... but a grid never grows past this on its long side by enlarging


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


def grid_scale(rows: int, cols: int, h: int, w: int) -> int:
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
    scale = grid_scale(rows, cols, h, w)
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
    scale = grid_scale(rows, cols, kh, kw)
    info = {
        "layout": layout,
        "colormap": colormap,
        "range": [-peak, peak],
        "grid": [rows, cols],
        "filters": out_c,
        "kernel": [kh, kw],
    }
    return _tile(tiles, cols, scale), info


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




# The sheet of a channel's top images (top.png).
TILE = 112  # px: the longer side of each patch
GAP = 6
CAPTION = 16  # px of label text under each patch
BOX_COLOUR = (255, 64, 64)
TEXT_COLOUR = (235, 235, 235)


def top_sheet(pictures: Sequence[StoredPicture]) -> bytes:
    """A channel's top images in one PNG, each with its receptive-field box and its label
    and activation under it."""
    tiles = [_top_tile(picture) for picture in pictures]
    columns = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / columns))
    cell_w, cell_h = TILE + GAP, TILE + CAPTION + GAP
    sheet = Image.new("RGB", (columns * cell_w + GAP, rows * cell_h + GAP), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for i, (tile, picture) in enumerate(zip(tiles, pictures, strict=True)):
        x = GAP + (i % columns) * cell_w + (TILE - tile.width) // 2
        y = GAP + (i // columns) * cell_h + (TILE - tile.height) // 2
        sheet.paste(tile, (x, y))
        entry = picture.entry
        said = entry.label if entry.score is None else f"{entry.label} {entry.score:.0%}"  # the model's own caption
        caption = _fit(draw, f"{said}  {entry.activation:.3g}", font, TILE)
        draw.text((GAP + (i % columns) * cell_w, GAP + (i // columns) * cell_h + TILE + 2), caption,
                  fill=TEXT_COLOUR, font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's built-in font: nothing to install or download.
    return ImageFont.load_default(size=11)


def _fit(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int
) -> str:
    """The text, shortened with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _top_tile(stored: StoredPicture) -> Image.Image:
    """The picture scaled to fit TILE px (pixels kept sharp when enlarged), in RGB, with the
    receptive-field box drawn where it lies in the picture."""
    with Image.open(io.BytesIO(stored.png)) as opened:
        picture = opened.convert("RGB")
    scale = TILE / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    tile = picture.resize(size, resample)
    if stored.entry.box is not None:
        left, top, right, bottom = stored.entry.box
        origin_x, origin_y = stored.origin[0], stored.origin[1]
        rect = (
            (left - origin_x) * scale,
            (top - origin_y) * scale,
            (right - origin_x) * scale - 1,
            (bottom - origin_y) * scale - 1,
        )
        ImageDraw.Draw(tile).rectangle(rect, outline=BOX_COLOUR, width=max(1, round(scale / 2)) if scale < 4 else 2)
    return tile
