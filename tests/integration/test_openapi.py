"""The OpenAPI document tells the truth: Schemathesis (`st run --checks all`) against
/openapi.json of a live server finds nothing. Bounded: a fixed seed and a few examples per
operation (about a minute on two cores).

Two runs, because one call changes what the others see: with an `infer` key over every
operation (the repository calls answer their documented 403), then with an `admin` key over
the repository calls alone (an unload makes every inference route answer 503 until the
next load, which `not_a_server_error` would count against them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.artifacts import write_artifact
from tests.support.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
INFER_KEY = "infer-0123456789abcdef0123"
ADMIN_KEY = "admin-0123456789abcdef0123"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer], tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    root = tmp_path_factory.mktemp("openapi") / "models"
    write_artifact(root, "synthetic", 1, seed=0)  # without a channel view: its routes answer 404
    write_artifact(root, "synthetic", 2, seed=1, views=True)
    # A small pass limit keeps each generated explanation cheap (the schema carries it).
    return start_server(root, api_keys=f"{INFER_KEY}:infer,{ADMIN_KEY}:admin", max_explain_passes=200)


def schemathesis(server: LiveServer, key: str, *options: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks", "all",
               "--seed", "1", "--request-timeout", "30", "-H", f"Authorization: Bearer {key}", *options]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=500)


@pytest.mark.slow
def test_schemathesis_finds_nothing(server: LiveServer, tmp_path: Path) -> None:
    everything = schemathesis(server, INFER_KEY, "--max-examples", "10", cwd=tmp_path)
    assert everything.returncode == 0, everything.stdout[-6000:] + everything.stderr[-2000:]
    assert "passed" in everything.stdout and "failure" not in everything.stdout.lower()
    control = schemathesis(server, ADMIN_KEY, "--max-examples", "10", "--include-path-regex", "^/v2/repository",
                           cwd=tmp_path)
    assert control.returncode == 0, control.stdout[-6000:] + control.stderr[-2000:]
