"""Bodies the OpenAPI document rules out are refused with a 400, never accepted or a 500; work
for a client who hangs up is cancelled, under the service's protocol and under any other."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from service.http.hangup import HANGUP, Hangup
from service.http.requests import ClientGone, unless_client_gone
from tests.support.images import png_bytes

IMAGE = base64.b64encode(png_bytes(np.full((8, 8), 9, dtype=np.uint8))).decode()


def test_json_with_both_image_and_images_is_ambiguous(client: TestClient) -> None:
    response = client.post("/v1/models/synthetic/predict", json={"image": IMAGE, "images": [IMAGE]})
    assert response.status_code == 400
    assert response.json()["error"] == 'send "image" (one base64 image) or "images" (a list), not both'


def test_a_multipart_text_part_outside_latin_1_is_a_bad_image_not_a_crash(client: TestClient) -> None:
    response = client.post("/v1/models/synthetic/predict", files={"image": (None, "मनीष منش")})
    assert response.status_code == 400


def test_v2_versions_in_the_document_match_what_the_server_takes(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/v2/models/{name}/versions/{version}"]["get"]["parameters"]
    (version,) = [p for p in parameters if p["name"] == "version"]
    assert (version["schema"]["pattern"], version["schema"]["maxLength"]) == ("^0*[1-9][0-9]*$", 9)
    assert client.get("/v2/models/synthetic/versions/001").status_code == 200
    assert client.get("/v2/models/synthetic/versions/000").status_code == 400


# -- unless_client_gone: the work stops when the client hangs up ---------------------------------

def request_with(hangup: Hangup | None, disconnect: asyncio.Event | None = None) -> Request:
    """A request whose body has been read; ``disconnect`` set: its client has gone (what
    ``receive`` then says, as every ASGI server does)."""
    async def receive() -> dict[str, Any]:
        await (disconnect or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
    if hangup is not None:
        scope[HANGUP] = hangup
    return Request(scope, receive)


async def slow(done: list[str]) -> str:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        done.append("cancelled")
        raise
    return "late"


@pytest.mark.anyio
@pytest.mark.parametrize("own_protocol", [True, False], ids=["hangup", "receive"])
async def test_work_finished_before_any_hang_up_is_the_answer(own_protocol: bool) -> None:
    hangup = Hangup() if own_protocol else None

    async def quick() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await unless_client_gone(request_with(hangup), quick()) == "answer"
    assert hangup is None or hangup.listener is None  # nothing listens once the work is done


@pytest.mark.anyio
@pytest.mark.parametrize("own_protocol", [True, False], ids=["hangup", "receive"])
async def test_a_hang_up_cancels_the_work_and_is_client_gone(own_protocol: bool) -> None:
    hangup, disconnect, done = Hangup(), asyncio.Event(), []
    request = request_with(hangup if own_protocol else None, disconnect)
    waiting = asyncio.ensure_future(unless_client_gone(request, slow(done)))
    await asyncio.sleep(0.02)
    hangup.fire()
    disconnect.set()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(waiting, 5)
    assert done == ["cancelled"]


@pytest.mark.anyio
async def test_a_client_gone_before_the_work_starts_is_client_gone_and_the_work_never_runs() -> None:
    hangup, done = Hangup(), []
    hangup.fire()
    with pytest.raises(ClientGone):
        await unless_client_gone(request_with(hangup), slow(done))
    assert done == []


@pytest.mark.anyio
async def test_a_cancel_from_elsewhere_stays_a_cancel_and_a_later_hang_up_is_nothing() -> None:
    hangup, done = Hangup(), []
    waiting = asyncio.ensure_future(unless_client_gone(request_with(hangup), slow(done)))
    await asyncio.sleep(0.02)
    waiting.cancel()  # the server shutting down, say
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert done == ["cancelled"] and hangup.listener is None
    hangup.fire()
