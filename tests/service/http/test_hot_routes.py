"""service/http/hot_routes.py: a method and path FastAPI routed to a planned route before go
straight to that route's plan, with the same answer, dependencies and errors as the full
way; anything else takes the full way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from service.http.hot_routes import HotRoutes, KnownPaths
from tests.support.services import serving

PNG = {"content-type": "image/png"}
KEY = "infer-key-0123456789abcdef"


def _hot(client: TestClient) -> HotRoutes:
    layer: Any = client.app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, HotRoutes):
        layer = layer.app
    return layer


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> Callable[[TestClient], list[str]]:
    """The paths that went past HotRoutes to FastAPI's router (installed on demand)."""
    def install(client: TestClient) -> list[str]:
        seen: list[str] = []
        hot = _hot(client)
        inner = hot.app

        async def spy(scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["path"])
            await inner(scope, receive, send)

        monkeypatch.setattr(hot, "app", spy)
        return seen
    return install


@pytest.fixture
def client(repository: Path) -> Iterator[TestClient]:
    with serving(model_repository=repository) as served:
        yield served


def test_the_second_request_to_a_path_skips_the_routing_with_the_same_answer(
        client: TestClient, routed: Callable[[TestClient], list[str]], random_png: Callable[..., bytes]) -> None:
    seen = routed(client)
    png = random_png()
    answers = [client.post("/v1/models/synthetic/predict?top_k=2", content=png, headers=PNG) for _ in range(3)]
    assert seen == ["/v1/models/synthetic/predict"]  # the first only
    assert all(a.status_code == 200 for a in answers)
    bodies = [a.json() for a in answers]
    assert all(b["predictions"] == bodies[0]["predictions"] and len(b["predictions"]) == 2 for b in bodies)
    assert answers[2].headers["x-convscope-replica"] and "server-timing" in answers[2].headers
    # Another version's path is another entry; a GET to a known path is not that entry.
    client.post("/v1/models/synthetic/versions/1/predict", content=png, headers=PNG)
    assert client.get("/v1/models/synthetic/predict").status_code == 405
    assert seen == ["/v1/models/synthetic/predict", "/v1/models/synthetic/versions/1/predict",
                    "/v1/models/synthetic/predict"]


def test_on_a_known_path_errors_are_the_apps_answers(
        client: TestClient, routed: Callable[[TestClient], list[str]], random_png: Callable[..., bytes]) -> None:
    path = "/v1/models/synthetic/predict"
    assert client.post(path, content=random_png(), headers=PNG).status_code == 200
    seen = routed(client)
    bad_param = client.post(f"{path}?top_k=0", content=random_png(), headers=PNG)
    assert bad_param.status_code == 422 and bad_param.json()["error"].startswith("invalid request: top_k")
    not_image = client.post(path, content=b"not an image", headers=PNG)  # a ServiceError from the handler
    assert not_image.status_code == 400 and "not an image" in not_image.json()["error"]
    bad_layer = client.post(f"{path}?layers=nope", content=random_png(), headers=PNG)
    assert bad_layer.status_code == 404 and "features.1" in bad_layer.json()["error"]  # names the valid ones
    assert seen == [path]  # only the 422 went the full way: FastAPI's own answer


def test_the_drain_applies_on_a_known_path(client: TestClient, random_png: Callable[..., bytes]) -> None:
    path = "/v1/models/synthetic/predict"
    assert client.post(path, content=random_png(), headers=PNG).status_code == 200
    client.app.state.drain.begin()  # type: ignore[attr-defined]
    refused = client.post(path, content=random_png(), headers=PNG)
    assert refused.status_code == 503 and refused.headers["retry-after"] and refused.headers["connection"] == "close"


def test_the_api_key_applies_on_a_known_path(repository: Path, tmp_path: Path,
                                              random_png: Callable[..., bytes]) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}:infer\n")
    with serving(model_repository=repository, api_keys_file=keys) as client:
        path = "/v1/models/synthetic/predict"
        assert client.post(path, content=random_png(), headers={**PNG, "Authorization": f"Bearer {KEY}"}
                           ).status_code == 200
        assert len(client.app.state.known_paths) == 1  # type: ignore[attr-defined]
        assert client.post(path, content=random_png(), headers=PNG).status_code == 401
        wrong = client.post(path, content=random_png(), headers={**PNG, "Authorization": "Bearer wrong-key-0123456789"})
        assert wrong.status_code in (401, 403)


def test_with_dependency_overrides_every_request_takes_the_full_way(
        client: TestClient, routed: Callable[[TestClient], list[str]], random_png: Callable[..., bytes]) -> None:
    path = "/v1/models/synthetic/predict"
    client.post(path, content=random_png(), headers=PNG)
    seen = routed(client)
    client.app.dependency_overrides[object] = object  # type: ignore[attr-defined]
    try:
        assert client.post(path, content=random_png(), headers=PNG).status_code == 200
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert seen == [path]


def test_the_table_is_bounded_and_keyed_by_method_and_path() -> None:
    known = KnownPaths(capacity=2)

    class Plan:
        async def run(self, request: Any) -> None:
            return None

    def scope(method: str, path: str) -> dict[str, Any]:
        return {"method": method, "path": path, "root_path": "", "route": None, "path_params": {"name": path}}

    for method, path in (("POST", "/a"), ("GET", "/a"), ("POST", "/b")):
        known.remember(scope(method, path), Plan())
    assert len(known) == 2 and known.get(scope("POST", "/b")) is None
    found = known.get(scope("POST", "/a"))
    assert found is not None and found.path_params == {"name": "/a"}
