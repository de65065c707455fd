"""Data loading and preprocessing: digits, idx files, ImageFolder, the pixel pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.datasets import (
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
    read_idx,
    stratified_split,
)
from model_export.errors import ExportError
from model_export.preprocessing import InputSpec, measure_mean_std, preprocess
from tests.support.export_cli import make_fashion_dir, make_imagefolder, write_idx


def test_digits_is_uint8_split_and_seeded() -> None:
    data = load_digits(seed=0)
    assert data.classes == [str(i) for i in range(10)]
    assert len(data.train) + len(data.val) == 1797
    assert 340 <= len(data.val) <= 380
    assert data.train.images.dtype == np.uint8 and data.train.images.shape[1:] == (8, 8)
    assert data.train.images.max() == 255 and data.train.images.min() == 0
    # Stratified: every class is held out in proportion.
    counts = np.bincount(data.val.labels, minlength=10)
    assert counts.min() >= 30
    again = load_digits(seed=0)
    np.testing.assert_array_equal(again.val.labels, data.val.labels)
    other = load_digits(seed=1)
    assert not np.array_equal(other.val.images, data.val.images)


def test_stratified_split_keeps_singletons_in_training() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, gz)
    np.testing.assert_array_equal(read_idx(path), array)


def test_read_idx_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"not an idx file")
    with pytest.raises(ExportError, match="not an unsigned-byte idx"):
        read_idx(bad)
    path = write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ExportError, match="header says"):
        read_idx(path)


def test_fashion_mnist_reader_on_tiny_files(tmp_path: Path) -> None:
    data = load_fashion_mnist(make_fashion_dir(tmp_path / "fm"))
    assert len(data.train) == 40 and len(data.val) == 20
    assert data.train.images.shape == (40, 28, 28)
    assert data.classes[0] == "T-shirt/top" and len(data.classes) == 10
    with pytest.raises(ExportError, match="does not exist"):
        load_fashion_mnist(tmp_path / "missing")


def test_imagefolder_split_and_modes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "shapes", per_class=10, size=12, rgb=True)
    # A non-image file and a grey image of another size are handled.
    (root / "horizontal" / "notes.txt").write_text("ignored")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "vertical" / "grey.png")
    data = load_imagefolder(root, seed=0)
    assert data.classes == ["horizontal", "vertical"]
    assert len(data.train) + len(data.val) == 21
    assert sorted(set(data.val.labels.tolist())) == [0, 1]
    shapes = {img.shape for img in data.train.images} | {img.shape for img in data.val.images}
    assert (12, 12, 3) in shapes and (20, 30) in shapes


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "d" / "train", per_class=6)
    make_imagefolder(tmp_path / "d" / "val", per_class=2, seed=5)
    data = load_imagefolder(tmp_path / "d", seed=0)
    assert (len(data.train), len(data.val)) == (12, 4)


def test_imagefolder_rejects_one_class_and_bad_images(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "one", classes=("only",), per_class=4)
    with pytest.raises(ExportError, match="at least two class"):
        load_imagefolder(root, seed=0)
    root = make_imagefolder(tmp_path / "bad", per_class=4)
    (root / "vertical" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ExportError, match="cannot read image .*broken.png"):
        load_imagefolder(root, seed=0)


def _reference_pipeline(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The service's steps, spelled out independently of model_export.preprocessing."""
    pil = Image.fromarray(image).convert(spec.color_mode)
    pil = pil.resize((spec.size[1], spec.size[0]), Image.BILINEAR)
    x = np.asarray(pil, dtype=np.float32)
    x = x[:, :, None] if x.ndim == 2 else x
    x = x * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("channels,size", [(1, (28, 28)), (3, (28, 28)), (3, (8, 8)), (1, (16, 24))])
@pytest.mark.parametrize("rgb_source", [False, True])
def test_preprocess_matches_the_service_steps(channels: int, size: tuple[int, int], rgb_source: bool) -> None:
    rng = np.random.default_rng(0)
    shape = (8, 8, 3) if rgb_source else (8, 8)
    images = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    spec = InputSpec(channels=channels, size=size, mean=(0.2,) * channels, std=(0.3,) * channels)
    batch = preprocess(images, spec)
    assert batch.shape == (3, channels, *size) and batch.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(batch[i], _reference_pipeline(images[i], spec))


def test_measured_mean_std_normalise_the_training_set() -> None:
    images = load_digits(seed=0).train.images
    mean, std = measure_mean_std(images, 1, (28, 28), seed=0)
    batch = preprocess(images, InputSpec(1, (28, 28), mean, std))
    assert abs(float(batch.mean())) < 1e-3
    assert abs(float(batch.std()) - 1.0) < 1e-3
