"""Where CPU work that is not the model's runs: small work right on the event loop (a
hand-off would cost more than it saves), larger work on a thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Encoding or checking maps this small (all of TinyVGG's for one digit are ~22k values,
# ~0.1 ms) costs less on the event loop than a hand-off to a worker thread and back.
INLINE_MAP_VALUES = 64 * 1024
# A JSON body this small parses in well under a millisecond: on the loop, no hand-off.
INLINE_PARSE_BYTES = 64 * 1024


class Workers:
    """The process's threads for decoding, preprocessing, encoding answers and parsing bodies."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="preprocess")
        # Parsing holds the GIL (C code building objects): more threads would parse no faster,
        # only take turns at the GIL with the event loop. On one thread the loop waits for
        # one C call at most between its own turns, however many bodies queue up.
        self.parser = ThreadPoolExecutor(1, thread_name_prefix="parse")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.parser.shutdown(wait=True, cancel_futures=True)

    async def offload(self, work: Callable[..., T], *args: Any, size: int) -> T:
        """Run CPU work over ``size`` values on the pool, or right here when it is small."""
        if size > INLINE_MAP_VALUES:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)
        return work(*args)

    async def parse(self, work: Callable[..., T], *args: Any, size: int) -> T:
        """Parse a request body of ``size`` bytes: right here when small, else on the one
        parsing thread, in turn, so that no body holds up the event loop."""
        if size <= INLINE_PARSE_BYTES:
            return work(*args)
        return await asyncio.get_running_loop().run_in_executor(self.parser, work, *args)
