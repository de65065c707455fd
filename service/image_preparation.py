"""From encoded images in a request to one float32 batch, and where that work runs.

Only the headers are read on the event loop (cheap whatever the image, and enough to refuse
a decompression bomb). An image of more than INLINE_PIXELS is decoded and preprocessed on a
worker thread; a smaller one (a 28 px digit) right on the loop, where it costs less than
the hand-off would.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from service.preprocessing import InputSpec, load, open_checked, preprocess

# Decoding and resizing an image this small takes tens of microseconds: less than handing
# it to a worker thread and back (the benchmark's 28 px digits gained ~15% images/s).
INLINE_PIXELS = 64 * 64


@dataclass(frozen=True)
class PreparedImages:
    tensor: NDArray[np.float32]  # [N, C, H, W]
    decode_seconds: float
    preprocess_seconds: float


@dataclass(frozen=True)
class _Prepared:
    tensor: NDArray[np.float32]  # [C, H, W]
    decode_seconds: float
    preprocess_seconds: float


class ImagePreparer:
    """Decodes and preprocesses images for a model, on the loop or on its own thread pool."""

    def __init__(self, pool: ThreadPoolExecutor, *, max_pixels: int) -> None:
        self.pool = pool
        self.max_pixels = max_pixels

    async def prepare(self, spec: InputSpec, images: list[bytes]) -> PreparedImages:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[_Prepared]] = []
        for data in images:
            started = time.perf_counter()
            image = open_checked(data, max_pixels=self.max_pixels)
            header_seconds = time.perf_counter() - started
            if image.width * image.height <= INLINE_PIXELS:
                done: asyncio.Future[_Prepared] = loop.create_future()
                done.set_result(_finish(image, spec, header_seconds))
                pending.append(done)
            else:
                pending.append(loop.run_in_executor(self.pool, _finish, image, spec, header_seconds))
        results = await asyncio.gather(*pending)
        tensor = results[0].tensor[None] if len(results) == 1 else np.stack([r.tensor for r in results])
        return PreparedImages(
            tensor=tensor,
            decode_seconds=sum(r.decode_seconds for r in results),
            preprocess_seconds=sum(r.preprocess_seconds for r in results),
        )


def _finish(image: Image.Image, spec: InputSpec, header_seconds: float) -> _Prepared:
    """Decode the pixels of a header-checked image and preprocess them."""
    started = time.perf_counter()
    decoded = load(image)
    decoded_at = time.perf_counter()
    tensor = preprocess(decoded, spec)
    return _Prepared(tensor, header_seconds + decoded_at - started, time.perf_counter() - decoded_at)
