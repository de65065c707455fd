"""An explanation's map as the answer carries it: json, npy, or a heat-map overlay PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from artifact import InputRecipe
from service.codecs import arrays, colormaps, pictures
from service.inference.preprocessing import InputSpec, preprocess

GREY = {"channels": 1, "size": [28, 28], "scale": 1 / 255, "mean": [0.13], "std": [0.31], "resize": "bilinear"}
RGB = {"channels": 3, "size": [32, 32], "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
       "std": [0.229, 0.224, 0.225], "resize": "bilinear"}


@pytest.mark.parametrize("meta", [GREY, RGB])
def test_the_input_image_is_what_the_model_saw(meta: dict) -> None:
    spec = InputSpec.from_recipe(InputRecipe.model_validate(meta))
    pixels = np.random.default_rng(0).integers(0, 256, (spec.height, spec.width, spec.channels), dtype=np.uint8)
    picture = Image.fromarray(pixels[..., 0] if spec.channels == 1 else pixels)
    tensor = preprocess(picture, spec)
    shown = pictures.input_image(tensor, meta["mean"], meta["std"], meta["scale"])
    assert shown.shape == (spec.height, spec.width, 3) and shown.dtype == np.uint8
    expected = np.repeat(pixels, 3, axis=2) if spec.channels == 1 else pixels
    assert np.abs(shown.astype(int) - expected).max() <= 1


def test_no_evidence_shows_the_image_and_full_evidence_shows_the_heat() -> None:
    image = np.full((28, 28, 3), 100, np.uint8)
    saliency = np.zeros((28, 28), np.float32)
    saliency[:, 14:] = 1.0
    rgb, info = pictures.saliency_overlay(image, saliency)
    assert info["colormap"] == "inferno" and info["scale"] == 8 and info["size"] == [224, 224]
    assert rgb.shape == (224, 224, 3)
    np.testing.assert_array_equal(rgb[:, :112], 100)  # left half: the image untouched
    top = colormaps.COLORMAPS["inferno"][255].astype(float)
    expected = 100 * (1 - pictures.OVERLAY_ALPHA) + top * pictures.OVERLAY_ALPHA
    np.testing.assert_allclose(rgb[0, -1], expected, atol=1)


def test_large_inputs_are_not_enlarged() -> None:
    rgb, info = pictures.saliency_overlay(np.zeros((224, 224, 3), np.uint8), np.zeros((224, 224), np.float32))
    assert info["scale"] == 1 and rgb.shape == (224, 224, 3)


def test_png_map_is_an_overlay_with_its_colormap_named() -> None:
    saliency = np.linspace(0, 1, 28 * 28, dtype=np.float32).reshape(28, 28)
    out = arrays.encode_saliency(saliency, "png", np.zeros((28, 28, 3), np.uint8), colormap="viridis")
    assert out["encoding"] == "png" and out["colormap"] == "viridis" and out["shape"] == [28, 28]
    decoded = Image.open(io.BytesIO(base64.b64decode(out["data"])))
    assert decoded.format == "PNG" and decoded.size == (224, 224)


@pytest.mark.parametrize("encoding", ["json", "npy"])
def test_json_and_npy_carry_the_map_itself(encoding: str) -> None:
    saliency = np.random.default_rng(1).random((28, 28)).astype(np.float32)
    out = arrays.encode_saliency(saliency, encoding)
    assert out["shape"] == [28, 28]
    if encoding == "json":
        np.testing.assert_array_equal(np.asarray(out["data"], np.float32), saliency)
    else:
        np.testing.assert_array_equal(np.load(io.BytesIO(base64.b64decode(out["data"]))), saliency)


def test_unknown_colormap_and_encoding_name_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown colormap 'jet'; valid: inferno, viridis"):
        pictures.saliency_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), "jet")
    with pytest.raises(ValueError, match="valid: json, npy, png"):
        arrays.encode_saliency(np.zeros((4, 4), np.float32), "stats")
