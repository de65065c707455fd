"""Bodies the OpenAPI document rules out are refused with a 400, never accepted or a 500."""

from __future__ import annotations

import base64

import numpy as np
from starlette.testclient import TestClient

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
