from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from service.codecs import arrays, pictures


def feature_map(c: int = 6, h: int = 5, w: int = 7) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(c, h, w)).astype(np.float32)


def test_stats_are_per_channel() -> None:
    array = feature_map()
    out = arrays.encode_feature_map(array, "stats")
    assert out["shape"] == [6, 5, 7]
    np.testing.assert_allclose(out["stats"]["min"], array.reshape(6, -1).min(1), rtol=1e-6)
    np.testing.assert_allclose(out["stats"]["max"], array.reshape(6, -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(out["stats"]["mean"], array.reshape(6, -1).mean(1), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_npy_round_trips(dtype: str) -> None:
    array = feature_map()
    out = arrays.encode_feature_map(array, "npy", dtype)
    loaded = np.load(io.BytesIO(base64.b64decode(out["data"])), allow_pickle=False)
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == array.shape
    np.testing.assert_allclose(loaded, array, rtol=1e-3 if dtype == "float16" else 0, atol=1e-3 if dtype == "float16" else 0)


def test_json_is_nested_lists() -> None:
    array = feature_map(2, 2, 3)
    out = arrays.encode_feature_map(array, "json")
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32), array)


def test_png_grid_tiles_every_channel() -> None:
    array = feature_map(10, 4, 4)
    out = arrays.encode_feature_map(array, "png")
    image = Image.open(io.BytesIO(base64.b64decode(out["data"])))
    rows, cols = out["grid"]
    assert rows * cols >= 10 and (rows - 1) * cols < 10
    th, tw = out["tile"]
    assert image.size == (cols * (tw + 1) + 1, rows * (th + 1) + 1)
    assert out["colormap"] == "viridis"
    assert out["range"] == pytest.approx([float(array.min()), float(array.max())])
    assert th >= pictures.MIN_TILE_PX  # 4x4 maps are enlarged so a person can see them


def test_png_of_a_flat_layer() -> None:
    grid, info = pictures.feature_map_grid(np.arange(10, dtype=np.float32))
    assert info["channels"] == 1 and grid.ndim == 3


def test_constant_map_does_not_divide_by_zero() -> None:
    grid, info = pictures.feature_map_grid(np.zeros((3, 4, 4), dtype=np.float32))
    assert info["range"] == [0.0, 0.0] and np.isfinite(grid).all()


def test_rgb_filters_are_colour_tiles_grey_at_zero() -> None:
    weights = np.zeros((4, 3, 5, 5), dtype=np.float32)
    weights[0, 0] = 1.0  # filter 0 is pure red
    grid, info = pictures.filters_grid(weights)
    assert info["layout"] == "rgb" and info["grid"] == [2, 2]
    tile = 5 * pictures.grid_scale(2, 2, 5, 5)
    assert tuple(grid[1, 1]) == (255, 128, 128)  # filter 0: red above grey
    assert tuple(grid[1, 1 + tile + 1]) == (128, 128, 128)  # filter 1: all zero, grey


def test_grey_filters_are_filters_by_input_channels() -> None:
    grid, info = pictures.filters_grid(np.ones((8, 2, 3, 3), dtype=np.float32))
    assert info["grid"] == [8, 2] and info["colormap"] == "coolwarm"


@pytest.mark.parametrize("encoding", list(arrays.Encoding))
def test_estimate_is_not_below_the_real_size(encoding: str) -> None:
    array = feature_map(16, 12, 12)
    real = len(json.dumps(arrays.encode_feature_map(array, encoding, "float32")))
    assert arrays.estimate_bytes(array.shape, encoding, "float32") >= real * 0.5


def test_grey_first_layer_filters_tile_in_a_square() -> None:
    grid, info = pictures.filters_grid(np.ones((10, 1, 3, 3), dtype=np.float32))
    assert info["layout"] == "filters" and info["grid"] == [3, 4]
