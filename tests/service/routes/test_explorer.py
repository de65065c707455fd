"""The explorer's ES modules as the server sends them: every module the page imports, found
by following its relative imports from the entry point under /explorer/, with a JavaScript
type (a browser runs no module without one); and the colour maps it paints with, the layer
catalogue's stops made into the same 256-entry tables by lib/colormap.mjs under node as by
service/codecs/colormaps.py. The modules' own unit tests run under node's test runner
(tests/service/static/, `make test`)."""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import service
from service.codecs import colormaps

STATIC = Path(service.__file__).parent / "static"
ENTRY = re.compile(r'<script type="module" src="(/explorer/[^"]+)"></script>')
IMPORT = re.compile(r'^import\s[^;]*?\bfrom\s+"(\.{1,2}/[^"]+)";', re.M)  # every module imports statically, by relative path
NODE = shutil.which("node")


def test_every_module_the_page_imports_is_served_as_javascript(client: TestClient) -> None:
    page = client.get("/").text
    found = ENTRY.search(page)
    assert found, "the page loads no module from /explorer/"
    served: dict[str, str] = {}
    todo = [found.group(1)]
    while todo:
        path = todo.pop()
        if path in served:
            continue
        response = client.get(path)
        assert response.status_code == 200, f"{path} (imported by the page) answers {response.status_code}"
        assert response.headers["content-type"] == "text/javascript; charset=utf-8", path
        assert response.headers["cache-control"] == "no-cache" and "etag" in response.headers, path
        served[path] = response.text
        todo += [posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
                 for target in IMPORT.findall(response.text)]
    on_disk = {"/explorer/" + p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.mjs")}
    assert set(served) == on_disk  # no module the page cannot reach, none it misses
    assert {"/explorer/lib/api.mjs", "/explorer/lib/npy.mjs", "/explorer/lib/colormap.mjs"} <= set(served)
    etag = client.get("/explorer/lib/npy.mjs").headers["etag"]
    assert client.get("/explorer/lib/npy.mjs", headers={"if-none-match": etag}).status_code == 304


def test_the_layer_catalogue_gives_the_colour_maps_the_server_paints_with(client: TestClient) -> None:
    block = client.get("/v1/models/synthetic/layers").json()["colormaps"]
    assert (block["feature_maps"], block["filters"], block["saliency"]) == (
        colormaps.FEATURE_COLORMAP, colormaps.FILTER_COLORMAP, colormaps.SALIENCY_COLORMAP)
    assert block["saliency_choices"] == list(colormaps.SALIENCY_COLORMAPS)
    assert block["stops"] == {name: [list(stop) for stop in stops] for name, stops in colormaps.COLORMAP_STOPS.items()}


@pytest.mark.skipif(NODE is None, reason="no node on PATH (apt-get install nodejs; .ci/run installs it)")
@pytest.mark.timeout(60)
def test_the_page_makes_the_same_tables_from_those_stops(client: TestClient) -> None:
    block = client.get("/v1/models/synthetic/layers").json()["colormaps"]
    script = (f'import {{ colormapsFrom, lut }} from {json.dumps((STATIC / "lib" / "colormap.mjs").as_uri())};\n'
              f"const block = {json.dumps(block)};\n"
              "const tables = Object.fromEntries(Object.entries(block.stops).map(([n, s]) => [n, Array.from(lut(s))]));\n"
              "const roles = Object.fromEntries(Object.entries(colormapsFrom(block)).map(([r, m]) => [r, m.name]));\n"
              "console.log(JSON.stringify({ tables, roles }));\n")
    assert NODE is not None
    run = subprocess.run([NODE, "--input-type=module"], input=script, capture_output=True, text=True, timeout=30, check=True)
    made = json.loads(run.stdout)
    assert set(made["tables"]) == set(colormaps.COLORMAPS)
    for name, table in colormaps.COLORMAPS.items():
        assert made["tables"][name] == table.ravel().tolist(), name
    assert made["roles"] == {"feature_maps": "viridis", "filters": "coolwarm", "saliency": "inferno"}
