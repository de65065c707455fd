"""/docs and /redoc work with no internet: every asset their pages load comes from the service."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|["'](https?://[^"']+)["']""")


@pytest.mark.parametrize("page, assets", [
    ("/docs", {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/assets/favicon.png"}),
    ("/redoc", {"/docs/assets/redoc.standalone.js", "/docs/assets/favicon.png"}),
])
def test_docs_pages_load_only_local_assets(client: TestClient, page: str, assets: set[str]) -> None:
    html = client.get(page).text
    referenced = {next(g for g in match.groups() if g) for match in URL.finditer(html)}
    remote = sorted(u for u in referenced if u.startswith(("http:", "https:", "//")))
    assert remote == [], f"{page} loads assets from elsewhere: {remote}"
    assert assets <= referenced
    for asset in referenced - {"/openapi.json"}:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    assert client.get("/openapi.json").json()["info"]["title"] == "convscope"


def test_swagger_ui_does_not_send_the_document_to_an_outside_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text
