"""Several worker processes: every one serves, and /metrics pools their counts."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.support.artifacts import write_artifact
from tests.support.images import png_bytes
from tests.support.live import LiveServer


def test_two_workers_pool_their_metrics(tmp_path: Path, start_server: Callable[..., LiveServer]) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    server = start_server(tmp_path, workers=2)
    image = png_bytes(np.full((8, 8), 50, dtype=np.uint8))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(40):
            # a new connection each time, so the kernel spreads them over both workers
            assert client.post("/predict", content=image, headers={"content-type": "image/png",
                                                                   "connection": "close"}).status_code == 200
        text = client.get("/metrics").text
    counts = {tuple(sorted(s.labels.items())): s.value
              for family in text_string_to_metric_families(text) for s in family.samples
              if s.name == "convscope_inference_count_total"}
    assert sum(counts.values()) == 40
    loaded = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "convscope_models_loaded"]
    assert loaded == [1.0]


def _listening_owner(port: int, pids: list[int]) -> dict[int, int]:
    """Socket inode -> pid, for the sockets of ``pids``."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def _server_side_inodes(port: int) -> dict[int, int]:
    """Client port -> inode of the server's end, for established connections to ``port``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == port:  # ESTABLISHED, server side
            found[int(remote.split(":")[1], 16)] = inode
    return found


def _worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_two_workers_both_answer_concurrent_connections(
        tmp_path: Path, start_server: Callable[..., LiveServer]) -> None:
    """32 connections open at once, as a load generator opens them: the kernel hashes them
    over both workers' SO_REUSEPORT sockets, and every one is answered."""
    write_artifact(tmp_path, "synthetic", 1)
    server = start_server(tmp_path, workers=2)
    port = int(server.url.rsplit(":", 1)[1])
    image = png_bytes(np.full((8, 8), 50, dtype=np.uint8))
    workers = _worker_pids(server.process.pid)
    assert len(workers) == 2, server.logs()

    async def load() -> tuple[list[int], dict[int, int]]:
        clients = [httpx.AsyncClient(base_url=server.url, timeout=30) for _ in range(32)]
        try:
            answers = await asyncio.gather(*(c.post("/predict", content=image, headers={"content-type": "image/png"})
                                             for c in clients))
            # Still open (keep-alive): find which worker holds each connection's server end.
            inodes = _server_side_inodes(port)
            owners = _listening_owner(port, workers)
            by_worker = collections.Counter(owners[i] for i in inodes.values() if i in owners)
            answers += await asyncio.gather(*(c.post("/predict", content=image, headers={"content-type": "image/png"})
                                              for c in clients))
            return [a.status_code for a in answers], dict(by_worker)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    statuses, by_worker = asyncio.run(load())
    assert statuses == [200] * 64
    assert sum(by_worker.values()) == 32, by_worker
    assert set(by_worker) == set(workers), f"connections per worker: {by_worker}"


def test_the_metrics_directory_is_removed_after_a_clean_stop(
        tmp_path: Path, start_server: Callable[..., LiveServer]) -> None:
    write_artifact(tmp_path, "synthetic", 1)
    before = set(Path(tempfile.gettempdir()).glob("convscope-metrics-*"))
    server = start_server(tmp_path, workers=2)
    created = set(Path(tempfile.gettempdir()).glob("convscope-metrics-*")) - before
    assert len(created) == 1
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0, server.logs()
    assert not any(p.exists() for p in created)
