"""From encoded image bytes to the model's input tensor, as the export stage trained it.

The recipe comes from the artifact's ``input`` metadata: decode with Pillow, apply EXIF
orientation, take the first frame, convert to the model's channels, resize with the
recorded filter, scale, normalise per channel, lay out as CHW float32.

Decode only what the model will see: a camera photo is 12 megapixels, the model's input
a few thousand pixels. When an image is at least ``2 * reducing_gap`` times the input
size, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's
``draft``), and any image is then shrunk by an integer box reduction (``Image.reduce``)
to no less than ``reducing_gap`` times the input before the recorded filter resamples
it. Both steps average whole blocks of pixels, which is what a downscaling filter does
anyway, so the result stays close to a full decode + resize (benchmarks/README.md
measures how close: top-1 agreement and probability differences on a trained model).
``reducing_gap=None`` (setting ``CONVSCOPE_FULL_RESOLUTION_DECODE``) keeps the exact
full-resolution path.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from artifact import InputRecipe
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
# The cheap integer steps stop at this many times the input size; the recorded filter does
# the rest. Pillow's own thumbnail() uses 2.0 ("indistinguishable in most cases" from 3.0
# up); measured agreement and speed for 1.5, 2 and 3 in benchmarks/README.md.
REDUCING_GAP = 2.0
# EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPS_AXES = {5, 6, 7, 8}


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
    reducing_gap: float | None = REDUCING_GAP
    """Shrink large images in integer steps (DCT scaling, box reduction) down to no less
    than this many times the input size before resampling; None: the exact path, full
    decode and one resample."""

    @classmethod
    def from_recipe(cls, recipe: InputRecipe, *, reducing_gap: float | None = REDUCING_GAP) -> InputSpec:
        resize = recipe.resize.lower()
        if resize not in _RESAMPLE:
            raise ValueError(f"input.resize {resize!r} is not one of {sorted(_RESAMPLE)}")
        channels = recipe.channels
        return cls(
            channels=channels,
            height=recipe.height,
            width=recipe.width,
            resample=_RESAMPLE[resize],
            scale=float(recipe.scale),
            mean=np.asarray(recipe.mean, dtype=np.float32).reshape(channels, 1, 1),
            std=np.asarray(recipe.std, dtype=np.float32).reshape(channels, 1, 1),
            reducing_gap=reducing_gap,
        )

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def decode(data: bytes, *, max_pixels: int, spec: InputSpec | None = None) -> Image.Image:
    """Decode an encoded image (first frame, EXIF orientation applied); with ``spec``, at
    reduced scale when the model's input is much smaller (see ``load``).

    Raises BadRequest for bytes that are not a complete image of an accepted format,
    PayloadTooLarge for images over ``max_pixels``.
    """
    image = open_checked(data, max_pixels=max_pixels)
    if spec is not None:
        reduce_on_decode(image, spec)
    return load_pillow(image)


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
    _check_pixels(*image.size, max_pixels)
    return image


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks after which Pillow does more than decode the pixels: a palette image's colours
# (PLTE with colour type 3 is refused anyway), a transparency colour, EXIF orientation, an
# animation's first frame.
_PILLOW_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL"})
_PLAIN_PNG_MODES = {0: "L", 2: "RGB"}  # colour type -> mode, 8 bits a sample


@dataclass(frozen=True)
class PlainPng:
    """An 8-bit grey or RGB PNG with no transparency, EXIF or animation: all Pillow would do
    is decode its pixels, which libpng (through imagecodecs) does in one C call that lets
    the GIL go, without Pillow's chunk reader in Python or its 4-byte RGB pixels and their
    copies: 6 us instead of 47 for a 28 px digit, 0.60 ms instead of 1.07 for a 224 px
    photo (this project's 2-core machine). On the event loop that is less work; on a worker
    thread it is also one hand-back of the GIL instead of several, each of which can wait
    for a busy loop (issue 23: AlexNet at 16 clients). PNG is lossless, so the pixels are
    the very ones Pillow gives (tests/service/inference/test_plain_png.py); every other
    image, and anything this header reader does not recognise, goes to Pillow."""

    data: bytes
    width: int
    height: int
    mode: str  # "L" or "RGB"
    format = "PNG"

    @classmethod
    def read(cls, data: bytes, up_to: int | None = None) -> PlainPng | None:
        """The image, when ``data`` is a complete plain PNG's chunk list of at most
        ``up_to`` pixels (None: any size); else None. The size comes first: a larger one is
        not walked chunk by chunk (a 4K PNG has thousands)."""
        if len(data) < 33 or not data.startswith(PNG_SIGNATURE):
            return None
        length, kind, width, height, depth, colour = struct.unpack_from(">I4sIIBB", data, 8)
        if kind != b"IHDR" or length != 13 or depth != 8 or colour not in _PLAIN_PNG_MODES or not width or not height:
            return None
        if up_to is not None and width * height > up_to:
            return None
        position, end = 8, len(data)
        while position + 12 <= end:
            length, kind = struct.unpack_from(">I4s", data, position)
            if kind in _PILLOW_CHUNKS:
                return None
            position += 12 + length
            if kind == b"IEND":
                return cls(data, width, height, _PLAIN_PNG_MODES[colour])
        return None  # truncated: Pillow says how

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def pixels(self) -> np.ndarray:
        from imagecodecs import PngError, png_decode

        try:
            return png_decode(self.data)
        except PngError as exc:  # a corrupt stream: libpng names what it found
            raise BadRequest(f"the image is truncated or corrupt: {exc}") from None


Header = Image.Image | PlainPng


def open_header(data: bytes, *, max_pixels: int, plain_pixels: int | None = None) -> Header:
    """``open_checked``, but a plain PNG (``PlainPng``) of at most ``plain_pixels`` (None:
    any size) is read without Pillow."""
    plain = PlainPng.read(data, plain_pixels)
    if plain is None:
        return open_checked(data, max_pixels=max_pixels)
    _check_pixels(plain.width, plain.height, max_pixels)
    return plain


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is "
            f"{max_pixels} (setting CONVSCOPE_MAX_IMAGE_PIXELS)"
        )


def reduce_on_decode(image: Header, spec: InputSpec) -> None:
    """Before ``load``: where the spec's ``reducing_gap`` is set, have a JPEG much larger than
    the model's input decoded at 1/2, 1/4 or 1/8 scale, never below ``reducing_gap`` times
    the input in either direction (after EXIF rotation). Only the decoder is configured:
    ``image.size`` says the reduced size at once, so the decode's memory can be counted
    from it. The header's full size has already been checked against the pixel limit."""
    # JPEG alone decodes at reduced scale; and only a JPEG's EXIF is in its header (a PNG's
    # getexif() would decode the whole image to look for one after the pixels).
    if spec.reducing_gap is not None and isinstance(image, Image.Image) and image.format == "JPEG":
        _draft(image, spec, spec.reducing_gap)


def load(image: Header) -> Image.Image | np.ndarray:
    """Decode the pixels of an image from ``open_header`` or ``open_checked`` (after
    ``reduce_on_decode``, if at all): first frame, EXIF orientation. A plain PNG gives an
    array ([H, W] or [H, W, 3] uint8), on the event loop and on a worker thread alike."""
    if isinstance(image, PlainPng):
        return image.pixels()
    return load_pillow(image)


def load_pillow(image: Image.Image) -> Image.Image:
    """``load`` for an image Pillow opened."""
    try:
        image.seek(0)  # first frame of an animation
        image.load()
        # In place: without a rotation to apply, exif_transpose would copy the whole image.
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadRequest(f"the image is truncated or corrupt: {exc}") from None
    return image


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # else 4 (RGB padded)


def decode_cost(image: Header, mode: str) -> int:
    """Bytes that ``load`` and ``to_mode(..., mode)`` need at their peak for an image from
    ``open_checked`` (and ``reduce_on_decode``: the size it will decode at), known from its
    header before any pixel is decoded: the decoded frame and, for an EXIF rotation, its
    transposed copy, then what converting it allocates (16-bit: a copy
    of the samples, float32 and 8-bit arrays; alpha: an RGBA copy, a background and the
    composite; then the converted image). A 16-bit PNG needs 13 bytes a pixel, RGB 8."""
    pixels = image.width * image.height
    stored = _BYTES_PER_PIXEL.get(image.mode, 4)
    cost = 2 * stored
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        isinstance(image, Image.Image) and image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        cost += 3 * 4
    elif image.mode in HIGH_DEPTH_MODES:
        cost += stored + 4 + 1 + 1
    if image.mode != mode or has_alpha:
        cost += 1 if mode == "L" else 4
    return pixels * cost


def _draft(image: Image.Image, spec: InputSpec, gap: float) -> None:
    """Ask the decoder (JPEG only; others ignore it) for a reduced scale. The smallest
    scale it may pick keeps both sides >= gap x the input, in the image's stored
    orientation, so the EXIF rotation applied afterwards leaves them right. libjpeg
    rounds a side that is not a multiple of the scale up (one partial block), which
    stretches the picture by under one reduced pixel: nothing a classifier can see."""
    width, height = spec.width, spec.height
    if image.getexif().get(ExifTags.Base.Orientation, 1) in _SWAPS_AXES:
        width, height = height, width
    wanted = (math.ceil(width * gap), math.ceil(height * gap))
    if image.width < 2 * wanted[0] or image.height < 2 * wanted[1]:
        return  # not even half-scale decoding fits: decode as is
    # A grey model reads the JPEG's luma alone (Y is the same 0.299/0.587/0.114 mix
    # Pillow's L conversion computes) and skips the colour planes.
    mode = "L" if spec.mode == "L" and image.mode == "RGB" else None
    image.draft(mode, wanted)


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


def preprocess(image: Image.Image | np.ndarray, spec: InputSpec) -> np.ndarray:
    """A decoded image (or a plain PNG's pixels) -> the model's CHW float32 input."""
    if isinstance(image, np.ndarray):
        pixels = image
        mode = "L" if pixels.ndim == 2 else "RGB"
        if mode != spec.mode or pixels.shape[:2] != (spec.height, spec.width):
            image = Image.fromarray(pixels, mode)  # to convert or resize, as any other image
    if isinstance(image, Image.Image):
        image = to_mode(image, spec.mode)
        if image.size != (spec.width, spec.height):
            # reducing_gap: Pillow first box-reduces by the integer factor that leaves at
            # least gap x the target (C, a few ms for 8 MP), then resamples with the recorded
            # filter, whose kernel is then gap x wide instead of as wide as the whole reduction.
            image = image.resize((spec.width, spec.height), spec.resample, reducing_gap=spec.reducing_gap)
        pixels = np.asarray(image)
    chw = pixels[None, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    # (p * scale - mean) / std as one multiply-add into a fresh buffer: a tenth of the
    # time of the three-temporary version for a 224 px RGB image.
    out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, spec.scale / spec.std, out=out, casting="unsafe")
    out -= spec.mean / spec.std
    return out
