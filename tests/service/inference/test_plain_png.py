"""A plain PNG (8-bit grey or RGB, no transparency, EXIF or animation) is decoded by libpng
(imagecodecs) rather than Pillow: the same tensor, bit for bit, on every path the recipe may
take; any other PNG, and anything the header reader does not recognise, stays Pillow's."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from artifact import InputRecipe
from service.errors import BadRequest, PayloadTooLarge
from service.inference.preprocessing import (
    InputSpec,
    PlainPng,
    decode,
    decode_cost,
    load,
    open_checked,
    open_header,
    preprocess,
)


def _spec(channels: int, size: int) -> InputSpec:
    return InputSpec.from_recipe(InputRecipe.model_validate({
        "channels": channels, "size": [size, size], "resize": "bilinear", "scale": 1 / 255,
        "mean": [0.3] * channels, "std": [0.2] * channels}))


def _png(array: np.ndarray, **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with a chunk inserted right after IHDR."""
    return data[:33] + _chunk(kind, body) + data[33:]


RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)


@pytest.mark.parametrize(("pixels", "spec"), [
    (GREY, _spec(1, 28)),  # as is: straight to the tensor
    (GREY, _spec(3, 28)),  # grey to an RGB model
    (GREY, _spec(1, 16)),  # resized
    (COLOUR, _spec(3, 12)),
    (COLOUR, _spec(1, 20)),  # RGB to a grey model, resized
])
@pytest.mark.parametrize("interlace", [False, True])
def test_the_tensor_is_pillows_bit_for_bit(pixels: np.ndarray, spec: InputSpec, interlace: bool) -> None:
    data = _png(pixels, **({"interlace": 1} if interlace else {}))
    header = open_header(data, max_pixels=10**6)
    assert isinstance(header, PlainPng)
    assert header.size == Image.open(io.BytesIO(data)).size
    assert decode_cost(header, spec.mode) == decode_cost(open_checked(data, max_pixels=10**6), spec.mode)
    ours = preprocess(load(header), spec)
    pillows = preprocess(decode(data, max_pixels=10**6), spec)
    assert ours.dtype == np.float32 and np.array_equal(ours, pillows)


def test_colour_management_chunks_are_ignored_by_both() -> None:
    data = _with_chunk(_png(COLOUR), b"gAMA", struct.pack(">I", 100000))
    assert isinstance(open_header(data, max_pixels=10**6), PlainPng)
    spec = _spec(3, 40)
    assert np.array_equal(preprocess(load(open_header(data, max_pixels=10**6)), spec),
                          preprocess(decode(data, max_pixels=10**6), spec))


@pytest.mark.parametrize("data", [
    _png(np.zeros((8, 8, 4), np.uint8)),  # RGBA: composited on black
    _png(np.zeros((8, 8), np.uint16)),  # 16-bit: stretched
    _png(GREY[:8, :8], bits=4),  # palette or low depth
    _with_chunk(_png(GREY), b"tRNS", b"\x00\x00"),  # a transparency colour
    _with_chunk(_png(GREY), b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x00"),  # EXIF (orientation)
    _png(GREY)[:-12],  # no IEND: truncated, Pillow says how
    b"GIF89a",
])
def test_anything_else_goes_to_pillow(data: bytes) -> None:
    try:
        header = open_header(data, max_pixels=10**6)
    except BadRequest:
        return  # Pillow refused it, as before
    assert not isinstance(header, PlainPng)


def test_a_png_above_the_plain_bound_is_pillows_without_a_chunk_walk() -> None:
    """A PNG over the bound is not walked chunk by chunk (on the loop, where headers are
    read): Pillow reads it."""
    data = _png(COLOUR)  # 30 x 40 = 1200 pixels
    assert isinstance(open_header(data, max_pixels=10**6, plain_pixels=1200), PlainPng)
    header = open_header(data, max_pixels=10**6, plain_pixels=1199)
    assert isinstance(header, Image.Image) and header.size == (30, 40)


def test_the_pixel_limit_is_checked_from_the_header() -> None:
    with pytest.raises(PayloadTooLarge, match="28x28 = 784 pixels; the limit is 100"):
        open_header(_png(GREY), max_pixels=100)


def test_a_corrupt_stream_is_a_bad_request() -> None:
    data = bytearray(_png(GREY))
    data[45] ^= 0xFF  # inside the IDAT's compressed stream; the chunk list is intact
    header = open_header(bytes(data), max_pixels=10**6)
    assert isinstance(header, PlainPng)
    with pytest.raises(BadRequest, match="truncated or corrupt"):
        load(header)
