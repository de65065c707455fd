"""The request bodies: real images, encoded as a client would send them.

- digits: one of scikit-learn's 8x8 digits (0..16), scaled to 0..255 exactly as the export
  stage does, enlarged to 28x28 (bilinear) and saved as PNG;
- photo: scikit-learn's sample photo (china.jpg, 427x640), resized to 224x224 and saved
  as JPEG (quality 90), the size AlexNet takes, so the service decodes but never resizes;
- camera photos (issue 14): china.jpg enlarged (bicubic) to a 12-megapixel phone camera's
  4032x3024 and saved as JPEG (quality 90, 1.4 MB), and flower.jpg enlarged to 4K UHD
  (3840x2160) and saved as PNG (3.4 MB). Enlarged photos compress better than sensor
  output, so real files of these sizes are larger; decoding cost follows the pixel count.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def digit_png(index: int = 0) -> bytes:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.clip(np.rint(bunch.images[index] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L").resize((28, 28), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo_jpeg(size: int = 224, index: int = 0) -> bytes:
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[index]  # uint8 HxWx3
    image = Image.fromarray(photo).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def camera_jpeg(size: tuple[int, int] = (4032, 3024), index: int = 0) -> bytes:
    """A photo at camera resolution (width, height) as JPEG, quality 90."""
    return _enlarged(size, index, "JPEG")


def camera_png(size: tuple[int, int] = (3840, 2160), index: int = 1) -> bytes:
    """A photo at 4K UHD (width, height) as PNG."""
    return _enlarged(size, index, "PNG")


def _enlarged(size: tuple[int, int], index: int, fmt: str) -> bytes:
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[index]
    image = Image.fromarray(photo).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


PHOTOS = {
    # key: (file name, content type, maker)
    "jpeg-224": ("photo-224.jpg", "image/jpeg", lambda: photo_jpeg(224)),
    "jpeg-12mp": ("photo-4032x3024.jpg", "image/jpeg", camera_jpeg),
    "png-4k": ("photo-3840x2160.png", "image/png", camera_png),
}


def write_photo(directory: Path, key: str) -> tuple[Path, str]:
    """One of PHOTOS on disk (made once, then reused): (path, content type)."""
    name, content_type, make = PHOTOS[key]
    path = directory / name
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
    return path, content_type


def body_for(channels: int, size: tuple[int, int]) -> tuple[bytes, str]:
    """(bytes, content type) of the image sent to a model with this input."""
    if channels == 1 and size == (28, 28):
        return digit_png(), "image/png"
    if size[0] != size[1]:
        raise ValueError(f"no sample image for a non-square input {size}")
    return photo_jpeg(size[0]), "image/jpeg"


def write_body(directory: Path, name: str, channels: int, size: tuple[int, int]) -> tuple[Path, str]:
    data, content_type = body_for(channels, size)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name + (".png" if content_type == "image/png" else ".jpg"))
    path.write_bytes(data)
    return path, content_type
