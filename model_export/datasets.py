"""Training data: scikit-learn's digits, Fashion-MNIST idx files, an ImageFolder tree.

Every loader returns images as uint8 arrays at their native size and colour (HxW for
grey, HxWx3 for colour): resizing, colour conversion and normalisation happen later in
`preprocessing`, with exactly the steps the service applies to an uploaded image.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ExportError

DATASETS = ("digits", "fashion-mnist", "imagefolder")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IMAGE_EXTENSIONS = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
}
VAL_FRACTION = 0.2


@dataclass
class Split:
    """Images (uint8, native size; a stacked array or a list when sizes differ)."""

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray  # int64 class indices

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        if isinstance(self.images, np.ndarray):
            return Split(self.images[indices], self.labels[indices])
        return Split([self.images[i] for i in indices], self.labels[indices])


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train: Split
    val: Split
    labelled: bool = True  # False: a flat folder of images, no classes (labels are -1)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class hold-out: (train indices, val indices), both sorted.

    Hand-rolled rather than sklearn's so that a class with a single image is kept in
    training instead of raising: small user folders are common.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_digits(seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (0..16) as uint8 0..255, 20% held out."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    whole = Split(images, labels)
    train_idx, val_idx = stratified_split(labels, VAL_FRACTION, seed)
    return Dataset("digits", [str(i) for i in range(10)], whole.subset(train_idx), whole.subset(val_idx))


def _open_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        return fh.read()


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (the MNIST format; gzip-compressed or not) into a uint8 array."""
    path = Path(path)
    try:
        data = _open_maybe_gz(path)
    except (OSError, EOFError) as exc:
        raise ExportError(f"cannot read idx file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ExportError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ExportError(f"{path}: truncated idx header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape)) if shape else 0
    if len(data) - header != count:
        raise ExportError(f"{path}: idx header says {count} bytes of data, file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise ExportError(f"Fashion-MNIST file {stem}[.gz] not found in {directory}")


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None) -> Dataset:
    """The four idx files: train (60k) for training, t10k (10k) held out."""
    directory = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise ExportError(f"Fashion-MNIST directory {directory} does not exist (use --data-dir)")
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ExportError(f"Fashion-MNIST {prefix} files in {directory} do not match")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ExportError(f"Fashion-MNIST {prefix} labels go beyond 9 in {directory}")
        splits.append(Split(images, labels))
    return Dataset("fashion-mnist", list(FASHION_MNIST_CLASSES), splits[0], splits[1])


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            # Grey stays grey (HxW), anything else becomes RGB (HxWx3): the two modes the
            # service knows. Palette/alpha images are flattened the way Pillow does it.
            mode = "L" if img.mode in ("L", "1", "I;16", "I", "F") else "RGB"
            converted = img if img.mode == mode else img.convert(mode)
            return np.asarray(converted, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ExportError(f"cannot read image {path}: {exc}") from None


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p
            for p in sub.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if files:
            classes[sub.name] = files
    return classes


def _load_tree(classes: dict[str, list[Path]], names: list[str]) -> Split:
    images: list[np.ndarray] = []
    labels: list[int] = []
    for index, name in enumerate(names):
        for path in classes.get(name, []):
            images.append(_read_image(path))
            labels.append(index)
    return Split(images, np.asarray(labels, dtype=np.int64))


def load_imagefolder(data_dir: str | os.PathLike[str] | None, seed: int) -> Dataset:
    """torchvision ImageFolder layout: one subfolder per class (sorted names = labels).

    `train/` and `val/` subfolders, when both exist, are the split; otherwise a seeded
    stratified 20% of each class is held out.
    """
    if not data_dir:
        raise ExportError("--dataset imagefolder needs --data-dir")
    root = Path(data_dir)
    if not root.is_dir():
        raise ExportError(f"data directory {root} does not exist")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_classes = _scan_classes(root / "train")
        val_classes = _scan_classes(root / "val")
        names = sorted(train_classes)
        extra = sorted(set(val_classes) - set(train_classes))
        if extra:
            raise ExportError(f"{root / 'val'} has classes missing from train/: {', '.join(extra)}")
        _check_classes(names, root / "train")
        if not val_classes:
            raise ExportError(f"{root / 'val'} holds no images")
        return Dataset("imagefolder", names, _load_tree(train_classes, names), _load_tree(val_classes, names))
    classes = _scan_classes(root)
    names = sorted(classes)
    _check_classes(names, root)
    whole = _load_tree(classes, names)
    train_idx, val_idx = stratified_split(whole.labels, VAL_FRACTION, seed)
    if len(val_idx) == 0:
        raise ExportError(f"{root}: too few images to hold any out for validation (need 2+ in a class)")
    return Dataset("imagefolder", names, whole.subset(train_idx), whole.subset(val_idx))


def load_images(data_dir: str | os.PathLike[str]) -> Dataset:
    """Images a model did not learn from (for a channel view, samples and the measurement
    of explanations), in either layout, the whole set as `val` (`train` is empty):

    - an ImageFolder tree (<class>/<image>; its `val/` when it has `train/` and `val/`):
      labelled, each image's class is its folder's;
    - a flat folder of images (no class subfolders): unlabelled (`labelled` False, labels
      -1); the channel view then captions each image with the model's own top-1.

    Class subfolders win: images lying beside them are not read.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ExportError(f"data directory {root} does not exist")
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / "val"
    empty = Split(np.zeros((0, 1, 1), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    classes = _scan_classes(root)
    names = sorted(classes)
    if names:
        return Dataset("imagefolder", names, empty, _load_tree(classes, names))
    files = _image_files(root)
    if not files:
        raise ExportError(
            f"{root} holds no images: give an ImageFolder (<class>/<image>) or a folder of images "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    images = [_read_image(path) for path in files]
    return Dataset("folder", [], empty, Split(images, np.full(len(images), -1, dtype=np.int64)), labelled=False)


def _image_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


UNLABELLED = "(unlabelled)"


def load_any_images(data_dir: str | os.PathLike[str]) -> Dataset:
    """Images a model did not learn from, labelled or not (for calibrating an int8 version):
    an ImageFolder tree as ``load_images`` reads it, else every image in the folder and
    below it, as one class named UNLABELLED. The images come back as `val`."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ExportError(f"data directory {root} does not exist")
    if (root / "train").is_dir() and (root / "val").is_dir() or _scan_classes(root):
        return load_images(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith("."))
    if not files:
        raise ExportError(f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}), in class subfolders "
                          "or not")
    images = [_read_image(path) for path in files]
    empty = Split(np.zeros((0, 1, 1), dtype=np.uint8), np.zeros(0, dtype=np.int64))
    return Dataset("images", [UNLABELLED], empty, Split(images, np.zeros(len(images), dtype=np.int64)))


def _check_classes(names: list[str], root: Path) -> None:
    if len(names) < 2:
        found = f"found {len(names)} ({', '.join(names)})" if names else "found none"
        raise ExportError(f"{root} needs at least two class subfolders with images; {found}")


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None, seed: int) -> Dataset:
    if name == "digits":
        return load_digits(seed)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "imagefolder":
        return load_imagefolder(data_dir, seed)
    raise ExportError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")


def subset_indices(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most `max_samples` of n items."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def limit(split: Split, max_samples: int | None, seed: int) -> Split:
    """A seeded random subset of at most `max_samples` (order kept), for quick runs."""
    if max_samples is None or max_samples >= len(split):
        return split
    return split.subset(subset_indices(len(split), max_samples, seed))
