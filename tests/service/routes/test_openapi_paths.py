"""The OpenAPI document keeps every path it had before the routes became a table: clients
and generated SDKs built on it keep working. The table added exactly the versioned twins of
the two operations that only had ``?version=`` (kept as a documented alias); operations added
since come on both paths."""

from __future__ import annotations

from pathlib import Path

from service.app import create_app
from service.settings import Settings

# GET/POST and path of every operation at 1b6ec64, before handlers and the route table.
BEFORE = [
    "GET /",
    "GET /healthz",
    "GET /metrics",
    "GET /readyz",
    "GET /v1/models",
    "GET /v1/models/{name}",
    "GET /v1/models/{name}/layers",
    "GET /v1/models/{name}/layers/{layer}/channels/{channel}",
    "GET /v1/models/{name}/layers/{layer}/channels/{channel}/filter",
    "GET /v1/models/{name}/layers/{layer}/channels/{channel}/top.png",
    "GET /v1/models/{name}/layers/{layer}/channels/{channel}/top/{rank}",
    "GET /v1/models/{name}/layers/{layer}/filters.png",
    "GET /v1/models/{name}/samples",
    "GET /v1/models/{name}/samples/{sample_id}",
    "GET /v1/models/{name}/versions/{version}",
    "GET /v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}",
    "GET /v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/filter",
    "GET /v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/top.png",
    "GET /v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/top/{rank}",
    "GET /v1/models/{name}/versions/{version}/samples",
    "GET /v1/models/{name}/versions/{version}/samples/{sample_id}",
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/ready",
    "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/versions/{version}/ready",
    "POST /explain",
    "POST /explain.png",
    "POST /predict",
    "POST /v1/models/{name}/explain",
    "POST /v1/models/{name}/explain.png",
    "POST /v1/models/{name}/layers/{layer}/feature_maps.png",
    "POST /v1/models/{name}/predict",
    "POST /v1/models/{name}/versions/{version}/explain",
    "POST /v1/models/{name}/versions/{version}/explain.png",
    "POST /v1/models/{name}/versions/{version}/layers/{layer}/feature_maps.png",
    "POST /v1/models/{name}/versions/{version}/predict",
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
    "POST /v2/repository/index",
    "POST /v2/repository/models/{name}/load",
    "POST /v2/repository/models/{name}/unload",
]
ADDED = [
    "GET /v1/models/{name}/quantization",  # issue 22: an int8 version's record, on both paths
    "GET /v1/models/{name}/versions/{version}/layers",
    "GET /v1/models/{name}/versions/{version}/layers/{layer}/filters.png",
    "GET /v1/models/{name}/versions/{version}/quantization",
]


def operations(tmp_path: Path) -> dict[str, dict[str, object]]:
    schema = create_app(Settings(model_repository=tmp_path)).openapi()
    return {f"{method.upper()} {path}": operation for path, methods in schema["paths"].items()
            for method, operation in methods.items()}


def test_every_path_is_still_there_and_the_new_ones_are_the_versioned_twins(tmp_path: Path) -> None:
    after = operations(tmp_path)
    assert [p for p in BEFORE if p not in after] == []
    assert sorted(set(after) - set(BEFORE)) == ADDED


def test_the_version_query_is_documented_as_an_alias(tmp_path: Path) -> None:
    after = operations(tmp_path)
    for path in ("GET /v1/models/{name}/layers", "GET /v1/models/{name}/layers/{layer}/filters.png"):
        (version,) = [p for p in after[path]["parameters"] if p["name"] == "version"]  # type: ignore[index]
        assert version["in"] == "query" and version["deprecated"] is True
        assert "alias" in version["description"]
    for path in (p for p in ADDED if "/versions/" in p):
        (version,) = [p for p in after[path]["parameters"] if p["name"] == "version"]  # type: ignore[index]
        assert version["in"] == "path" and version["required"] is True
