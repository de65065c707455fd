"""Several worker processes: every one serves, and /metrics pools their counts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import LiveServer
from tests.service.conftest import png_bytes
from tests.service.synthetic import write_artifact


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
