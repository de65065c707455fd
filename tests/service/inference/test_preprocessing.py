from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from artifact import InputRecipe
from service.errors import BadRequest, PayloadTooLarge
from service.inference.preprocessing import InputSpec, decode, preprocess, to_mode

GREY = InputSpec.from_recipe(InputRecipe.model_validate({"channels": 1, "size": [8, 8], "resize": "bilinear", "scale": 1 / 255,
                                "mean": [0.5], "std": [0.25]}))
RGB = InputSpec.from_recipe(InputRecipe.model_validate({"channels": 3, "size": [6, 4], "resize": "bilinear", "scale": 1 / 255,
                               "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}))


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
        InputSpec.from_recipe(InputRecipe.model_validate({"channels": 1, "size": [8, 8], "resize": "magic", "scale": 1,
                                 "mean": [0], "std": [1]}))


# -- decoding only what the model sees (issue 14) -------------------------------------------

PHOTO_SPEC = InputSpec.from_recipe(InputRecipe.model_validate({"channels": 3, "size": [32, 32], "resize": "bilinear", "scale": 1 / 255,
                                      "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}))
EXACT = replace(PHOTO_SPEC, reducing_gap=None)


def photo(size: tuple[int, int]) -> Image.Image:
    """scikit-learn's china.jpg enlarged: real image content at a camera-like size."""
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0]).resize(size, Image.Resampling.BICUBIC)


def both_paths(data: bytes, spec: InputSpec = PHOTO_SPEC) -> tuple[np.ndarray, np.ndarray]:
    reduced = preprocess(decode(data, max_pixels=10**8, spec=spec), spec)
    exact = preprocess(decode(data, max_pixels=10**8, spec=replace(spec, reducing_gap=None)),
                       replace(spec, reducing_gap=None))
    return reduced, exact


def assert_close(reduced: np.ndarray, exact: np.ndarray) -> None:
    # In 0..255 pixel levels (std 0.25 on a 1/255 scale: 1 level = 1/63.75 normalised).
    levels = np.abs(reduced - exact) * 0.25 * 255
    assert levels.mean() < 1.5 and levels.max() < 16, (levels.mean(), levels.max())


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_matches_the_exact_path() -> None:
    data = encode(photo((1600, 1200)), "JPEG", quality=90)
    decoded = decode(data, max_pixels=10**8, spec=PHOTO_SPEC)
    # Input 32 px, gap 2: the smallest scale keeping both sides >= 64 px is 1/8.
    assert decoded.size == (200, 150)
    assert decode(data, max_pixels=10**8, spec=EXACT).size == (1600, 1200)
    assert decode(data, max_pixels=10**8).size == (1600, 1200)  # no spec: as before
    assert_close(*both_paths(data))


def test_reduced_decoding_never_goes_below_the_gap() -> None:
    data = encode(photo((300, 200)), "JPEG")
    # 200 / 64 = 3.1: half scale leaves 100 >= 64, a quarter would not.
    assert decode(data, max_pixels=10**8, spec=PHOTO_SPEC).size == (150, 100)
    small = encode(photo((100, 100)), "JPEG")
    assert decode(small, max_pixels=10**8, spec=PHOTO_SPEC).size == (100, 100)


def test_exif_rotation_with_reduced_decoding_gives_the_upright_size() -> None:
    spec = replace(PHOTO_SPEC, height=128, width=32)  # a tall input
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated a quarter turn clockwise
    data = encode(photo((2048, 1024)), "JPEG", exif=exif)
    decoded = decode(data, max_pixels=10**8, spec=spec)
    # Upright it is 1024 wide, 2048 tall; >= 64 x 256 is wanted: 1/8 fits. Judged in the
    # stored orientation without the swap, 1024 / 256 would allow only 1/4.
    assert decoded.size == (128, 256)
    assert_close(*both_paths(data, spec))


def test_cmyk_jpeg_on_the_reduced_path() -> None:
    data = encode(photo((1024, 768)).convert("CMYK"), "JPEG", quality=95)
    assert decode(data, max_pixels=10**8, spec=PHOTO_SPEC).size == (128, 96)
    assert_close(*both_paths(data))


def test_grey_model_reads_a_large_jpeg_luma_only() -> None:
    spec = replace(PHOTO_SPEC, channels=1, mean=np.full((1, 1, 1), 0.5, np.float32),
                   std=np.full((1, 1, 1), 0.25, np.float32))
    data = encode(photo((1024, 768)), "JPEG", quality=95)
    decoded = decode(data, max_pixels=10**8, spec=spec)
    assert decoded.mode == "L" and decoded.size == (128, 96)
    assert_close(*both_paths(data, spec))


@pytest.mark.parametrize("mode", ["RGB", "P", "I;16", "RGBA"])
def test_large_png_is_box_reduced_before_the_resample(mode: str) -> None:
    image = photo((1280, 960))
    if mode == "P":
        image = image.quantize(64)
    elif mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), dtype=np.uint16) * 200))
    elif mode == "RGBA":
        image = image.convert("RGBA")
    data = encode(image, "PNG")
    if mode == "I;16":
        spec = replace(PHOTO_SPEC, channels=1, mean=np.full((1, 1, 1), 0.5, np.float32),
                       std=np.full((1, 1, 1), 0.25, np.float32))
        assert_close(*both_paths(data, spec))
    else:
        assert_close(*both_paths(data))


def test_animated_gif_first_frame_on_the_reduced_path() -> None:
    first, second = photo((800, 600)).quantize(64), Image.new("P", (800, 600), 0)
    data = encode(first, "GIF", save_all=True, append_images=[second])
    reduced, exact = both_paths(data)
    assert_close(reduced, exact)
    assert reduced.std() > 0.1  # the photo, not the blank second frame


def test_small_images_are_untouched_by_the_reduced_path() -> None:
    data = encode(photo((60, 50)), "JPEG")
    reduced, exact = both_paths(data)
    np.testing.assert_array_equal(reduced, exact)


def test_pixel_limit_is_checked_from_the_header_on_the_reduced_path() -> None:
    data = encode(photo((1600, 1200)), "JPEG")
    with pytest.raises(PayloadTooLarge, match="1920000 pixels"):
        decode(data, max_pixels=1_000_000, spec=PHOTO_SPEC)
