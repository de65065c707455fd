"""Routes that follow a plan (service/routes/direct.py): the hot routes skip FastAPI's
``solve_dependencies``, answer exactly what FastAPI's own handler answers for the same
request (valid or not), and a route of another shape keeps FastAPI's handler."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.testclient import TestClient

from service.routes.direct import DirectRoute, Plan
from tests.support.services import serving

PNG = {"content-type": "image/png"}


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI solved dependencies for."""
    seen: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request"].url.path)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return seen


@pytest.fixture
def served(repository: Path, counted: list[str]) -> Iterator[TestClient]:
    with serving(model_repository=repository) as client:
        yield client


def v2_request(png: bytes) -> dict[str, Any]:
    return {"inputs": [{"name": "image_bytes", "shape": [1, 1], "datatype": "BYTES",
                        "data": [base64.b64encode(png).decode()]}]}


def test_predictions_and_v2_inference_skip_fastapis_dependency_solving(
        served: TestClient, counted: list[str], random_png: Callable[..., bytes]) -> None:
    png = random_png()
    counted.clear()  # the readiness probes of serving()
    for path in ("/predict", "/v1/models/synthetic/predict", "/v1/models/synthetic/versions/1/predict",
                 "/v1/models/synthetic/predict?top_k=2&layers=all"):
        response = served.post(path, content=png, headers=PNG)
        assert response.status_code == 200, response.text
    response = served.post("/v2/models/synthetic/infer", json=v2_request(png))
    assert response.status_code == 200, response.text
    assert counted == []


# Each request once through the plan and once through FastAPI's own handler.
CASES: list[tuple[str, str]] = [
    ("POST", "/v1/models/synthetic/predict"),
    ("POST", "/v1/models/synthetic/versions/1/predict"),
    ("POST", "/v1/models/synthetic/predict?top_k=2&layers=conv1,all&encoding=png&dtype=float16"),
    ("POST", "/v1/models/synthetic/predict?layers=conv1&layers=relu1&unknown=1"),
    ("POST", "/v1/models/synthetic/predict?top_k=0"),
    ("POST", "/v1/models/synthetic/predict?top_k=two&encoding=gif"),
    ("POST", "/v1/models/synthetic/predict?layers="),
    ("POST", "/v1/models/synthetic/predict?version=1"),
    ("POST", "/v1/models/synthetic/predict?version=1.0"),
    ("POST", "/v1/models/synthetic/versions/01x/predict"),
    ("POST", "/v1/models/synthetic/versions/0/predict"),
    ("POST", "/v1/models/synthetic/versions/7/predict"),
    ("POST", "/v1/models/no%20such/predict"),
    ("POST", "/v1/models/nope/predict"),
    ("POST", "/predict?top_k=1001"),
    ("GET", "/v1/models/synthetic/layers?version=2"),
    ("GET", "/v1/models/synthetic/layers/conv1/filters.png?state=initial"),
    ("GET", "/v1/models/synthetic/layers/conv1/filters.png?state=guess"),
    ("GET", "/v2/models/synthetic/versions/00/ready"),
    ("POST", "/v2/models/synthetic/versions/1/infer"),
    ("POST", "/v2/models/synthetic/versions/x/infer"),
]


def answer(client: TestClient, method: str, path: str, png: bytes) -> tuple[int, Any, dict[str, str]]:
    if method == "GET":
        response = client.get(path)
    elif path.startswith("/v2"):
        response = client.post(path, json=v2_request(png))
    else:
        response = client.post(path, content=png, headers=PNG)
    headers = {k: v for k, v in response.headers.items() if k not in ("server-timing", "content-length")}
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        body.pop("timings_ms", None)
        return response.status_code, body, headers
    return response.status_code, response.content, headers


def test_every_request_is_answered_as_fastapis_own_handler_answers_it(
        served: TestClient, counted: list[str], random_png: Callable[..., bytes]) -> None:
    png = random_png()
    direct = [answer(served, method, path, png) for method, path in CASES]
    # Any dependency override sends every request through FastAPI's own handler.
    app: FastAPI = served.app  # type: ignore[assignment]
    app.dependency_overrides[test_every_request_is_answered_as_fastapis_own_handler_answers_it] = lambda: None
    counted.clear()
    fastapis = [answer(served, method, path, png) for method, path in CASES]
    assert len(counted) == len(CASES)
    for (method, path), mine, theirs in zip(CASES, direct, fastapis):
        assert mine == theirs, f"{method} {path}"
    assert {status for status, _, _ in direct} >= {200, 404, 422}


def test_while_draining_the_plan_runs_the_apps_drain_check(
        served: TestClient, random_png: Callable[..., bytes]) -> None:
    served.app.state.drain.begin()  # type: ignore[attr-defined]
    response = served.post("/v1/models/synthetic/predict", content=random_png(), headers=PNG)
    assert response.status_code == 503 and "retry-after" in {k.lower() for k in response.headers}


# -- the shapes a plan handles, on a small app of its own ----------------------------------------

async def by_request(request: Request) -> str:
    return request.url.path


def sync_dependency(request: Request) -> str:
    return "sync"


async def by_header(x_thing: str = Header("")) -> str:
    return x_thing


async def nested(value: str = Depends(by_request)) -> str:
    return value


async def yielding() -> Any:
    yield 1


def endpoint_with(*extra: Any) -> Callable[..., Any]:
    async def endpoint(request: Request, size: int = Query(3, ge=1)) -> Response:
        return JSONResponse({"size": size})
    return endpoint


@pytest.mark.parametrize("dependency, planned", [
    (by_request, True),
    (sync_dependency, False),  # FastAPI runs it on a worker thread: its handler keeps that
    (by_header, False),
    (nested, False),
    (yielding, False),
])
def test_a_plan_is_made_only_for_the_shapes_it_repeats_exactly(dependency: Any, planned: bool) -> None:
    app = FastAPI()
    app.router.route_class = DirectRoute
    app.add_api_route("/x", endpoint_with(), dependencies=[Depends(dependency)], methods=["GET"])
    route = next(r for r in app.routes if isinstance(r, DirectRoute))
    assert (Plan.of(route.dependant) is not None) is planned
    with TestClient(app) as client:  # and either way the route answers as declared
        assert client.get("/x?size=4").json() == {"size": 4}
        assert client.get("/x?size=0").status_code == 422


def test_a_mutable_default_is_fresh_for_every_request_as_fastapi_gives_it() -> None:
    """Defaults are read once, when the plan is made; a list default is still copied per
    request (an endpoint that appends to it must not see the last request's items)."""
    app = FastAPI()
    app.router.route_class = DirectRoute

    async def endpoint(tags: list[str] = Query(["a"]), size: int = 3) -> Response:
        tags.append("seen")
        return JSONResponse({"tags": tags, "size": size})

    app.add_api_route("/x", endpoint, methods=["GET"])
    route = next(r for r in app.routes if isinstance(r, DirectRoute))
    plan = Plan.of(route.dependant)
    assert plan is not None
    assert [(p.field.name, p.fresh_default) for p in plan.parameters] == [("tags", True), ("size", False)]
    with TestClient(app) as client:
        assert client.get("/x").json() == {"tags": ["a", "seen"], "size": 3}
        assert client.get("/x").json() == {"tags": ["a", "seen"], "size": 3}
        assert client.get("/x?tags=b&size=5").json() == {"tags": ["b", "seen"], "size": 5}
