"""The image -> tensor steps, the same ones the service applies from metadata `input`.

Pillow image in mode L (1 channel) or RGB (3) -> resize((W, H), BILINEAR) -> float32
* scale -> (x - mean) / std per channel -> NCHW. Training, mean/std measurement and the
parity check all go through `preprocess`, so a model never sees any other pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from artifact import InputRecipe

from .errors import ExportError

SCALE = 1.0 / 255.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Above this many images, mean/std are measured on a seeded sample: the estimate is
# within ~1e-3 of the full-set value, and measuring 60k images at 224 px would take minutes.
STATS_SAMPLE = 10_000


@dataclass
class InputSpec:
    channels: int
    size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = SCALE

    @property
    def color_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def to_recipe(self, name: str = "input", fixed_batch: int | None = None) -> InputRecipe:
        """metadata `input`: what the service does to an image before the model sees it."""
        h, w = self.size
        return InputRecipe(
            name=name,
            shape=[fixed_batch or -1, self.channels, h, w],
            fixed_batch=fixed_batch,
            channels=self.channels,
            color_mode=self.color_mode,
            size=(h, w),
            resize="bilinear",
            scale=self.scale,
            mean=[float(m) for m in self.mean],
            std=[float(s) for s in self.std],
        )


def check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ExportError(f"channels must be 1 (grey, mode L) or 3 (RGB), not {channels}")


def normalisation(values: Sequence[float] | None, channels: int, what: str) -> tuple[float, ...] | None:
    """--mean/--std: one value per channel, or one value for all channels."""
    if values is None:
        return None
    if len(values) == 1:
        values = list(values) * channels
    if len(values) != channels:
        raise ExportError(f"--{what} needs 1 or {channels} values, got {len(values)}")
    if what == "std" and any(v <= 0 for v in values):
        raise ExportError("--std values must be positive")
    # float32-representable values, so what metadata says is what the model saw.
    return tuple(float(np.float32(v)) for v in values)


def to_pixels(image: np.ndarray, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One uint8 image -> float32 HxWxC pixels in the 0..255 range after resize."""
    mode = "L" if channels == 1 else "RGB"
    h, w = size
    native_mode = "L" if image.ndim == 2 else "RGB"
    if image.shape[:2] == (h, w) and native_mode == mode:
        # Pillow's resize to the same size is a copy, so skipping it is exact.
        pixels = image
    elif image.shape[:2] == (h, w) and native_mode == "L":
        # L -> RGB in Pillow replicates the grey value: exact as well.
        pixels = np.repeat(image[:, :, None], 3, axis=2)
    else:
        pil = Image.fromarray(image, mode=native_mode)
        if pil.mode != mode:
            pil = pil.convert(mode)
        pixels = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR))
    pixels = pixels.astype(np.float32)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def preprocess(images: Sequence[np.ndarray] | np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 images (any size, L or RGB) -> float32 NCHW batch, normalised."""
    out = np.empty((len(images), spec.channels, *spec.size), dtype=np.float32)
    scale = np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    for i, image in enumerate(images):
        chw = to_pixels(image, spec.channels, spec.size).transpose(2, 0, 1) * scale
        out[i] = (chw - mean) / std
    return out


def measure_mean_std(
    images: Sequence[np.ndarray] | np.ndarray,
    channels: int,
    size: tuple[int, int],
    seed: int,
    scale: float = SCALE,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of scaled, resized training pixels (what the net will see)."""
    n = len(images)
    if n == 0:
        raise ExportError("no training images to measure mean/std on")
    indices = np.arange(n)
    if n > STATS_SAMPLE:
        indices = np.sort(np.random.default_rng(seed + 2).choice(n, STATS_SAMPLE, replace=False))
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    count = 0
    for i in indices:
        px = to_pixels(images[int(i)], channels, size).astype(np.float64) * scale
        total += px.sum(axis=(0, 1))
        total_sq += (px * px).sum(axis=(0, 1))
        count += px.shape[0] * px.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    # A constant channel (e.g. an all-black set) would divide by zero: use 1.
    std = np.where(std < 1e-6, 1.0, std)
    return (
        tuple(float(np.float32(m)) for m in mean),
        tuple(float(np.float32(s)) for s in std),
    )
