"""API keys: parsing, every route's declared access, 401/403 on every route group, control
disabled without keys, and keys never echoed or logged."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from starlette.testclient import TestClient

from service.app import create_app
from service.http import auth
from service.http.auth import Access, KeyRing, Scope, parse_keys
from service.settings import Settings
from tests.support.artifacts import write_artifact
from tests.support.services import serving

INFER_KEY = "infer-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
PATH_VALUES = {"name": "synthetic", "version": "1", "layer": "features.1", "channel": "0", "rank": "0",
               "sample_id": "0"}


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# convscope keys\n{INFER_KEY}:infer\n\n{ADMIN_KEY}:admin\n")
    return path


@pytest.fixture
def guarded(repository: Path, keys_file: Path) -> Iterator[TestClient]:
    with serving(model_repository=repository, api_keys_file=keys_file) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def routes(client: TestClient, *accesses: Access) -> list[tuple[str, str]]:
    """(method, concrete path) of every route declaring one of ``accesses``."""
    found = []
    for info in auth.api_routes(client.app):  # type: ignore[arg-type]
        if auth.access_of(info.route) in accesses:
            path = re.sub(r"{(\w+)}", lambda m: PATH_VALUES[m.group(1)], info.path)
            found += [(method, path) for method in sorted(info.methods)]
    assert found
    return found


def test_keys_parse_with_their_scopes_and_bad_entries_say_where_not_what() -> None:
    keys = parse_keys([f"{INFER_KEY}:infer", "  ", "# comment", f"{ADMIN_KEY}:admin"], "test")
    ring = KeyRing(keys)
    assert (ring.scope_of(INFER_KEY), ring.scope_of(ADMIN_KEY), ring.scope_of("nope")) == (Scope.INFER, Scope.ADMIN,
                                                                                          None)
    secret = "s3cret-s3cret-s3cret"
    for entry, problem in [(secret, "expected <key>:<scope>"), (f"{secret}:root", "not a scope"),
                           ("short:infer", "at least 16"), (f"{secret} x:infer", "printable ASCII"),
                           (f"{secret}:adm", "not a scope")]:
        with pytest.raises(ValueError, match=problem) as info:
            parse_keys(["# first", entry], "CONVSCOPE_API_KEYS_FILE keys")
        assert "line 2" in str(info.value)
        assert secret not in str(info.value) and "adm" not in str(info.value).replace("admin", "")
    with pytest.raises(ValueError, match="line 2: the same key is already on line 1"):
        parse_keys([f"{secret}:infer", f"{secret}:admin"], "f")


def test_key_settings_that_cannot_work_stop_the_start(tmp_path: Path, keys_file: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        KeyRing.load(tmp_path / "missing", None)
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        KeyRing.load(tmp_path / "empty", None)
    with pytest.raises(ValueError, match="also in CONVSCOPE_API_KEYS_FILE"):
        KeyRing.load(keys_file, f"{INFER_KEY}:infer")
    with pytest.raises(ValueError, match="CONVSCOPE_METRICS_REQUIRE_KEY needs API keys"):
        Settings(metrics_require_key=True)
    both = KeyRing.load(keys_file, "other-key-0123456789ab:admin")
    assert len(both) == 3


def test_every_route_declares_exactly_one_access(repository: Path) -> None:
    app = create_app(Settings(model_repository=repository))
    infos = auth.api_routes(app)
    assert len(infos) > 20
    assert [i.path for i in infos if auth.access_of(i.route) is None] == []
    extra = APIRouter()

    @extra.get("/forgotten")
    async def forgotten() -> None: ...

    app.include_router(extra)
    with pytest.raises(RuntimeError, match=r"exactly one access.*/forgotten"):
        auth.install(app, auth.AccessPolicy(KeyRing()))


def test_without_a_key_every_guarded_route_answers_401_with_the_challenge(guarded: TestClient) -> None:
    guarded_routes = routes(guarded, Access.INFER, Access.ADMIN)
    groups = {path.split("/")[1] or "/" for _, path in guarded_routes}
    assert {"v1", "v2", "predict"} <= groups and any("/v2/repository" in p for _, p in guarded_routes)
    for method, path in guarded_routes:
        missing = guarded.request(method, path)
        assert missing.status_code == 401, (method, path, missing.text)
        assert missing.headers["www-authenticate"] == 'Bearer realm="convscope"'
        assert missing.json() == {"error": "this call needs an API key: send `Authorization: Bearer <key>`"}
        unknown = guarded.request(method, path, headers=bearer("not-a-key-0123456789"))
        assert unknown.status_code == 401
        assert unknown.headers["www-authenticate"] == 'Bearer realm="convscope", error="invalid_token"'
        assert "not-a-key" not in unknown.text
        basic = guarded.request(method, path, headers={"Authorization": f"Basic {INFER_KEY}"})
        assert basic.status_code == 401


def test_scopes_infer_for_inference_admin_for_everything(guarded: TestClient) -> None:
    for method, path in routes(guarded, Access.ADMIN):
        forbidden = guarded.request(method, path, headers=bearer(INFER_KEY))
        assert forbidden.status_code == 403, (method, path)
        assert forbidden.json()["error"] == "this call needs a key of scope admin; the key sent has scope infer"
    for key in (INFER_KEY, ADMIN_KEY):
        assert guarded.get("/v1/models", headers=bearer(key)).status_code == 200
        assert guarded.get("/v2/models/synthetic", headers=bearer(key)).status_code == 200
    assert guarded.post("/v2/repository/index", headers=bearer(ADMIN_KEY)).status_code == 200
    assert guarded.get("/v1/models", headers={"authorization": f"bearer {INFER_KEY}"}).status_code == 200


def test_probes_docs_and_metrics_stay_open(guarded: TestClient) -> None:
    for method, path in routes(guarded, Access.PROBE, Access.PUBLIC, Access.METRICS):
        assert guarded.request(method, path).status_code in (200, 503), path  # 503: a probe saying not ready
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs", "/openapi.json"):
        assert guarded.get(path).status_code == 200, path


def test_metrics_can_require_a_key(repository: Path, keys_file: Path) -> None:
    with serving(model_repository=repository, api_keys_file=keys_file, metrics_require_key=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(INFER_KEY)).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_without_keys_inference_is_open_and_control_is_disabled_saying_how_to_enable_it(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 200
    for method, path in routes(client, Access.ADMIN):
        response = client.request(method, path, headers=bearer(ADMIN_KEY))
        assert response.status_code == 403
        assert "repository control is disabled because no API key is configured" in response.json()["error"]
        assert "CONVSCOPE_API_KEYS_FILE" in response.json()["error"]


def test_the_openapi_document_says_which_calls_need_a_key(guarded: TestClient, client: TestClient) -> None:
    paths = guarded.get("/openapi.json").json()["paths"]
    assert paths["/v1/models"]["get"]["security"] == [{"bearer": []}]
    assert "401" in paths["/v2/repository/index"]["post"]["responses"]
    assert "security" not in paths["/healthz"]["get"] and "security" not in paths["/metrics"]["get"]
    open_paths = client.get("/openapi.json").json()["paths"]
    assert "security" not in open_paths["/v1/models"]["get"]  # without keys inference is open
    assert "403" in open_paths["/v2/repository/index"]["post"]["responses"]


def test_keys_never_reach_the_log(tmp_path: Path, keys_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_artifact(tmp_path / "models", "synthetic", 1)
    with caplog.at_level(logging.DEBUG):
        with serving(model_repository=tmp_path / "models", api_keys_file=keys_file) as c:
            c.get("/v1/models", headers=bearer(INFER_KEY))
            c.get("/v1/models", headers=bearer("wrong-key-0123456789abc"))
            c.post("/v2/repository/index", headers=bearer(ADMIN_KEY))
    text = caplog.text
    assert "2 API key(s) configured" in text
    assert INFER_KEY not in text and ADMIN_KEY not in text and "wrong-key" not in text


def test_the_explorer_and_its_modules_are_public_and_ask_for_a_key(guarded: TestClient) -> None:
    # The page and its modules hold no model data: served without a key. What they do with one
    # (a Bearer header, sessionStorage, pictures from blobs) is tested by node's test runner
    # (tests/service/static/lib/api.test.mjs) and in a browser (test_explorer_browser.py).
    page = guarded.get("/")
    assert page.status_code == 200 and 'id="keyform"' in page.text
    for module in ("explorer.mjs", "ui/server.mjs", "lib/api.mjs", "views/key.mjs"):
        assert guarded.get(f"/explorer/{module}").status_code == 200, module
    assert "sessionStorage.getItem(KEY)" in guarded.get("/explorer/ui/server.mjs").text
    assert guarded.get("/v1/models").status_code == 401


def test_the_cli_refuses_unusable_keys_with_exit_2_and_never_prints_them(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("s3cret-but-no-scope-at-all\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    result = subprocess.run([sys.executable, "-m", "service", "--api-keys-file", str(keys), "--model-repository",
                             str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert f"CONVSCOPE_API_KEYS_FILE {keys}, line 1: expected <key>:<scope>" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
