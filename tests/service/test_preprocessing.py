from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import BadRequest, PayloadTooLarge
from service.preprocessing import InputSpec, decode, preprocess, to_mode

GREY = InputSpec.from_metadata({"channels": 1, "size": [8, 8], "resize": "bilinear", "scale": 1 / 255,
                                "mean": [0.5], "std": [0.25]})
RGB = InputSpec.from_metadata({"channels": 3, "size": [6, 4], "resize": "bilinear", "scale": 1 / 255,
                               "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]})


def encode(image: Image.Image, format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_decodes_every_accepted_format(format: str) -> None:
    image = Image.new("RGB", (30, 20), (200, 100, 50))
    decoded = decode(encode(image, format), max_pixels=10_000)
    assert decoded.size == (30, 20)


def test_gif_uses_the_first_frame() -> None:
    frames = [Image.new("L", (10, 10), 10), Image.new("L", (10, 10), 250)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first = np.asarray(decode(data, max_pixels=10_000).convert("L"))
    assert first.max() < 100


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode(encode(image, "JPEG", exif=exif), max_pixels=10_000)
    assert decoded.size == (10, 40)


def test_pixel_limit_refuses_before_decoding() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(PayloadTooLarge, match="10000 pixels"):
        decode(data, max_pixels=9_999)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not an image at all", "not an image"),
])
def test_undecodable_bytes_are_a_bad_request(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode(data, max_pixels=10_000)


def test_truncated_image_is_a_bad_request() -> None:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)), "PNG")
    with pytest.raises(BadRequest):
        decode(data[: len(data) // 2], max_pixels=100_000)


def test_preprocess_follows_the_recipe() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    tensor = preprocess(Image.fromarray(pixels), GREY)
    assert tensor.shape == (1, 8, 8) and tensor.dtype == np.float32
    expected = (pixels.astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6, atol=1e-6)


def test_preprocess_resizes_with_pillow_bilinear_and_lays_out_chw() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (17, 13, 3), dtype=np.uint8)
    tensor = preprocess(Image.fromarray(pixels), RGB)
    assert tensor.shape == (3, 6, 4)
    resized = np.asarray(Image.fromarray(pixels).resize((4, 6), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = (resized / 255 - np.array([0.1, 0.2, 0.3])) / 0.5
    np.testing.assert_allclose(tensor, expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_transparent_pixels_become_black() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white, but fully transparent
    grey = to_mode(Image.fromarray(rgba), "L")
    assert np.asarray(grey).max() == 0


def test_sixteen_bit_greyscale_is_stretched_not_clipped() -> None:
    data = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    image = Image.fromarray(data)
    grey = np.asarray(to_mode(image, "L"))
    assert grey.min() == 0 and grey.max() == 255


def test_colour_image_to_a_grey_model() -> None:
    tensor = preprocess(Image.new("RGB", (8, 8), (255, 255, 255)), GREY)
    np.testing.assert_allclose(tensor, (1.0 - 0.5) / 0.25, rtol=1e-6)


def test_unknown_resize_filter_is_rejected() -> None:
    with pytest.raises(ValueError, match="resize"):
        InputSpec.from_metadata({"channels": 1, "size": [8, 8], "resize": "magic", "scale": 1,
                                 "mean": [0], "std": [1]})
