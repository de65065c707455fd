"""Model versions coming and going on a live server, over real HTTP: the repository poll
under steady load, a failing new version, and Triton's repository extension through the
stock tritonclient with API keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.artifacts import publish, write_artifact
from tests.support.images import png_bytes
from tests.support.live import LiveServer

IMAGE = png_bytes(np.full((8, 8), 100, dtype=np.uint8))
ADMIN_KEY = "admin-0123456789abcdef0123"
INFER_KEY = "infer-0123456789abcdef0123"


class SteadyLoad:
    """``clients`` threads, each sending predictions back to back on its own connection,
    recording (status, version answered, time) until stopped."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[list[tuple[int, int | None, float]]] = [[] for _ in range(clients)]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30) as client:
                while not self.stop.is_set():
                    response = client.post("/v1/models/synthetic/predict", content=IMAGE,
                                           headers={"content-type": "image/png"})
                    version = response.json().get("version") if response.status_code == 200 else None
                    self.results[index].append((response.status_code, version, time.monotonic()))
        except BaseException as exc:  # a reset or a timeout is a lost request: the test fails on it
            self.errors.append(exc)

    def __enter__(self) -> SteadyLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def answered(self) -> list[tuple[int, int | None, float]]:
        return sorted((r for results in self.results for r in results), key=lambda r: r[2])

    def wait_for_version(self, version: int, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [r[2] for r in self.answered() if r[1] == version]
            if seen:
                return seen[0]
            time.sleep(0.05)
        raise TimeoutError(f"no answer from version {version} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def polled(start_server: Callable[..., LiveServer], tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root = tmp_path_factory.mktemp("polled") / "models"
    write_artifact(root, "synthetic", 1, seed=0)
    server = start_server(root, repository_poll_seconds=0.2)
    server.repository = root  # type: ignore[attr-defined]
    return server


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_version_added_under_load_becomes_the_default_with_no_failed_request(polled: LiveServer) -> None:
    root: Path = polled.repository  # type: ignore[attr-defined]
    with SteadyLoad(polled.url) as load:
        time.sleep(1.0)
        published = time.monotonic()
        publish(root, "synthetic", 2, seed=1)
        switched = load.wait_for_version(2)
        time.sleep(0.5)
    answered = load.answered()
    assert load.errors == []
    assert [r for r in answered if r[0] != 200] == []
    for results in load.results:  # each client: version 1, then version 2, never back
        versions = [v for _, v, _ in results]
        assert versions == sorted(versions) and versions[-1] == 2
    before = sum(1 for r in answered if r[2] < published)
    print(f"\nreload under load: {len(answered)} requests ({before} before the new version appeared), "
          f"0 non-2xx, first answer from version 2 {switched - published:.2f} s after it was written")
    listing = httpx.get(f"{polled.url}/v1/models").json()["models"][0]
    assert listing["default_version"] == 2 and [v["state"] for v in listing["versions"]] == ["ready", "ready"]
    assert metric(polled.url, "convscope_model_loads_total", model="synthetic", outcome="success") == 2
    assert metric(polled.url, "convscope_models_loaded") == 2


def test_a_failing_new_version_leaves_the_previous_default_serving(polled: LiveServer) -> None:
    root: Path = polled.repository  # type: ignore[attr-defined]
    publish(root, "synthetic", 3, seed=2, corrupted=True)
    deadline = time.monotonic() + 30
    while True:
        versions = httpx.get(f"{polled.url}/v1/models").json()["models"][0]["versions"]
        if versions[0]["version"] == 3 and versions[0]["state"] == "failed":
            break
        assert time.monotonic() < deadline, versions
        time.sleep(0.1)
    assert "model.onnx does not match its sha256" in versions[0]["reason"]
    answer = httpx.post(f"{polled.url}/v1/models/synthetic/predict", content=IMAGE,
                        headers={"content-type": "image/png"})
    assert (answer.status_code, answer.json()["version"]) == (200, 2)
    explicit = httpx.post(f"{polled.url}/v1/models/synthetic/versions/3/predict", content=IMAGE,
                          headers={"content-type": "image/png"})
    assert explicit.status_code == 503 and "version 3 is failed" in explicit.json()["error"]
    assert metric(polled.url, "convscope_model_loads_total", model="synthetic", outcome="failure") == 1
    assert metric(polled.url, "convscope_models_failed") == 1


@pytest.fixture(scope="module")
def keyed(start_server: Callable[..., LiveServer], tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root = tmp_path_factory.mktemp("keyed") / "models"
    write_artifact(root, "synthetic", 1, seed=0)
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"{INFER_KEY}:infer\n{ADMIN_KEY}:admin\n")
    return start_server(root, api_keys_file=keys)


@pytest.fixture
def triton(keyed: LiveServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=keyed.url.removeprefix("http://"))
    yield client
    client.close()


def infer(client: httpclient.InferenceServerClient, headers: dict[str, str]) -> np.ndarray:
    model_input = httpclient.InferInput("input", [1, 1, 8, 8], "FP32")
    model_input.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.float32))
    return client.infer("synthetic", [model_input], headers=headers).as_numpy("logits")


def test_unload_and_load_through_tritonclient_with_an_admin_key(triton: httpclient.InferenceServerClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    reader = {"Authorization": f"Bearer {INFER_KEY}"}
    assert "model_repository" in triton.get_server_metadata(headers=reader)["extensions"]
    assert triton.get_model_repository_index(headers=admin) == [
        {"name": "synthetic", "version": "1", "state": "READY", "reason": ""}]
    before = infer(triton, reader)

    triton.unload_model("synthetic", headers=admin)
    assert not triton.is_model_ready("synthetic", headers=reader)
    with pytest.raises(InferenceServerException, match="unloaded on request"):
        infer(triton, reader)
    (entry,) = triton.get_model_repository_index(headers=admin)
    assert entry["state"] == "UNAVAILABLE" and "unloaded on request" in entry["reason"]

    triton.load_model("synthetic", headers=admin)
    assert triton.is_model_ready("synthetic", headers=reader)
    np.testing.assert_array_equal(infer(triton, reader), before)


def test_control_needs_the_admin_scope_and_names_no_key(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="needs a key of scope admin") as forbidden:
        triton.unload_model("synthetic", headers={"Authorization": f"Bearer {INFER_KEY}"})
    assert INFER_KEY not in str(forbidden.value)
    with pytest.raises(InferenceServerException, match="needs an API key"):
        triton.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="unknown model 'nope'; valid: synthetic"):
        triton.load_model("nope", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert triton.is_model_ready("synthetic", headers={"Authorization": f"Bearer {INFER_KEY}"})
