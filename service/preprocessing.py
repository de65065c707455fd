"""From encoded image bytes to the model's input tensor, exactly as the export stage trained it.

The recipe comes from the artifact's ``input`` metadata: decode with Pillow, apply EXIF
orientation, take the first frame, convert to the model's channels, resize with the
recorded filter, scale, normalise per channel, lay out as CHW float32.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import BadRequest, PayloadTooLarge

# Pillow's own bomb check warns (an error under strict warning filters) before raising;
# the service checks the header's size itself, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


@dataclass(frozen=True)
class InputSpec:
    """The preprocessing recipe of one model."""

    channels: int
    height: int
    width: int
    resample: Image.Resampling
    scale: float
    mean: np.ndarray  # shape (C, 1, 1)
    std: np.ndarray  # shape (C, 1, 1)

    @classmethod
    def from_metadata(cls, inp: dict[str, Any]) -> InputSpec:
        resize = str(inp.get("resize", "bilinear")).lower()
        if resize not in _RESAMPLE:
            raise ValueError(f"input.resize {resize!r} is not one of {sorted(_RESAMPLE)}")
        channels = int(inp["channels"])
        return cls(
            channels=channels,
            height=int(inp["size"][0]),
            width=int(inp["size"][1]),
            resample=_RESAMPLE[resize],
            scale=float(inp["scale"]),
            mean=np.asarray(inp["mean"], dtype=np.float32).reshape(channels, 1, 1),
            std=np.asarray(inp["std"], dtype=np.float32).reshape(channels, 1, 1),
        )

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def decode(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode an encoded image (first frame, EXIF orientation applied).

    Raises BadRequest for bytes that are not a complete image of an accepted format,
    PayloadTooLarge for images over ``max_pixels``.
    """
    return load(open_checked(data, max_pixels=max_pixels))


def open_checked(data: bytes, *, max_pixels: int) -> Image.Image:
    """Read only the header: format, size (checked against ``max_pixels``). Cheap whatever
    the image, so it can run anywhere; ``load`` does the decoding."""
    if not data:
        raise BadRequest("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise BadRequest(
            "the body is not an image this service can decode "
            f"(accepted: {', '.join(f.lower() for f in ACCEPTED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadRequest(f"the image cannot be read: {exc}") from None
    # Image.open reads only the header: refuse a bomb before its pixels are allocated.
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is "
            f"{max_pixels} (setting CONVSCOPE_MAX_IMAGE_PIXELS)"
        )
    return image


def load(image: Image.Image) -> Image.Image:
    """Decode the pixels of an image from ``open_checked``: first frame, EXIF orientation."""
    try:
        image.seek(0)  # first frame of an animation
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadRequest(f"the image is truncated or corrupt: {exc}") from None
    return image


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # else 4 (RGB padded)


def decode_cost(image: Image.Image, mode: str) -> int:
    """Bytes that ``load`` and ``to_mode(..., mode)`` need at their peak for an image from
    ``open_checked``, known from its header before any pixel is decoded: the decoded frame
    and the copy exif_transpose returns, then what converting it allocates (16-bit: a copy
    of the samples, float32 and 8-bit arrays; alpha: an RGBA copy, a background and the
    composite; then the converted image). A 16-bit PNG needs 13 bytes a pixel, RGB 8."""
    pixels = image.width * image.height
    stored = _BYTES_PER_PIXEL.get(image.mode, 4)
    cost = 2 * stored
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        cost += 3 * 4
    elif image.mode in HIGH_DEPTH_MODES:
        cost += stored + 4 + 1 + 1
    if image.mode != mode or has_alpha:
        cost += 1 if mode == "L" else 4
    return pixels * cost


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to L or RGB. Transparent pixels become black, the datasets' background."""
    if image.mode == mode:
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in HIGH_DEPTH_MODES:
        # 16-bit and float greyscale: stretch to 8 bits rather than clip to white. float32,
        # in place: 4 bytes a pixel at once, not float64's 8 three times (decode_cost).
        array = np.asarray(image, dtype=np.float32)
        lo, hi = float(array.min()), float(array.max())
        array -= lo
        array *= 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(array.astype(np.uint8))  # 2-D uint8 -> mode L
    return image.convert(mode)


def preprocess(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image -> the model's CHW float32 input."""
    image = to_mode(image, spec.mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), spec.resample)
    pixels = np.asarray(image)
    chw = pixels[None, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    # (p * scale - mean) / std as one multiply-add into a fresh buffer: a tenth of the
    # time of the three-temporary version for a 224 px RGB image.
    out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, spec.scale / spec.std, out=out, casting="unsafe")
    out -= spec.mean / spec.std
    return out
