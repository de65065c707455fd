"""The channel routes in process (TestClient): both version paths of every operation, the
links in the JSON answers, ETags and 304s, immutable caching where the URL names the
version, and the 404s that name what is valid. (tests/integration/test_http_channels.py
checks the same over a real server with a trained model.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.support.artifacts import write_artifact
from tests.support.services import serving

NEWEST = "/v1/models/synthetic"
V2 = "/v1/models/synthetic/versions/2"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("models")
    write_artifact(root, "synthetic", 1, seed=0)  # no channel view
    write_artifact(root, "synthetic", 2, seed=1, views=True)
    with serving(model_repository=root) as c:
        yield c


@pytest.mark.parametrize("base", [NEWEST, V2])
def test_a_channel_on_both_paths_links_the_versioned_pictures(client: TestClient, base: str) -> None:
    response = client.get(f"{base}/layers/features.1/channels/2")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["layer"], body["channel"], body["images"]) == ("features.1", 2, 40)
    assert [entry["rank"] for entry in body["top"]] == [0, 1, 2, 3]
    assert body["top"][1]["image_url"] == f"{V2}/layers/features.1/channels/2/top/1"
    assert body["top_png_url"] == f"{V2}/layers/features.1/channels/2/top.png"
    for url in [body["top_png_url"], body["top"][0]["image_url"]]:
        picture = client.get(url)
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
        assert picture.headers["content-type"] == "image/png"


def test_caching_immutable_where_the_version_is_named_and_revalidated_where_not(client: TestClient) -> None:
    versioned = client.get(f"{V2}/layers/features.1/channels/0/top.png")
    newest = client.get(f"{NEWEST}/layers/features.1/channels/0/top.png")
    assert versioned.headers["cache-control"] == "max-age=31536000, immutable"
    assert newest.headers["cache-control"] == "no-cache"
    again = client.get(f"{V2}/layers/features.1/channels/0/top.png",
                       headers={"If-None-Match": versioned.headers["etag"]})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == versioned.headers["etag"]
    other = client.get(f"{V2}/layers/features.1/channels/1/top.png",
                       headers={"If-None-Match": versioned.headers["etag"]})
    assert other.status_code == 200  # another channel, another answer


def test_samples_and_a_channels_filter(client: TestClient) -> None:
    samples = client.get(f"{NEWEST}/samples").json()["samples"]
    assert samples[0] == {"id": 0, "label": "class_0", "score": None, "image_url": f"{V2}/samples/0"}  # a true label
    assert client.get(samples[-1]["image_url"]).content.startswith(b"\x89PNG")
    kernel = client.get(f"{V2}/layers/features.1/channels/3/filter").json()
    assert kernel["shape"] == [1, 3, 3] and kernel["conv"] == "conv" and kernel["reads_image"] is True
    assert len(kernel["trained"][0]) == 3 and kernel["initial"] is not None


@pytest.mark.parametrize("path, status, words", [
    ("/v1/models/synthetic/versions/1/layers/features.1/channels/0", 404, "has no channel view: it was not computed"),
    (f"{V2}/layers/fc/channels/0", 404, "unknown layer 'fc'; valid: features.1, features.2"),
    (f"{V2}/layers/features.1/channels/4", 404, "has 4 channels; valid: 0..3, not 4"),
    (f"{V2}/layers/features.1/channels/0/top/4", 404, "valid ranks: 0..3, not 4"),
    (f"{V2}/samples/9", 404, "unknown sample 9 of model synthetic; valid: 0..8"),
    ("/v1/models/synthetic/versions/7/samples", 404, "model synthetic has no version 7; valid: 1, 2"),
    ("/v1/models/nope/samples", 404, "unknown model 'nope'; valid: synthetic"),
    (f"{V2}/layers/features.1/channels/+1", 422, "indexes are non-negative integers written in ASCII digits"),
])
def test_refusals_name_what_is_valid(client: TestClient, path: str, status: int, words: str) -> None:
    response = client.get(path)
    assert response.status_code == status and words in response.json()["error"], response.text
