"""The v2 codec on its own: requests parsed against a signature, responses built from
outputs, no server, registry or data plane (the HTTP behaviour is in test_v2.py)."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import orjson
import pytest

from service.codecs import oip as oip
from service.errors import BadRequest, PayloadTooLarge
from service.models.signature import LayerSignature, ModelSignature

SIGNATURE = ModelSignature(
    name="m", version=3, input_name="input", input_shape=(1, 2, 2), output_name="logits",
    labels=("cat", "dog", "fox"), layers=(LayerSignature("features.1", (4, 2, 2)),),
)


def no_limit(count: int) -> None:
    pass


def parse(payload: dict[str, object], binary: bytes = b"") -> oip.InferenceRequest:
    header = json.dumps(payload).encode()
    return oip.parse_request(header + binary, str(len(header)) if binary else None, SIGNATURE, no_limit,
                             max_images=64)


def tensor_input(values: list[float], shape: list[int]) -> dict[str, object]:
    return {"name": "input", "datatype": "FP32", "shape": shape, "data": values}


def test_json_tensor_with_defaults() -> None:
    request = parse({"id": "r1", "inputs": [tensor_input([0.0, 1.0, 2.0, 3.0], [1, 1, 2, 2])]})
    assert isinstance(request.data, np.ndarray) and request.data.shape == (1, 1, 2, 2)
    assert request.id == "r1" and request.batch_size == 1
    assert request.run_outputs(SIGNATURE) == ("logits",)  # only the class output by default


def test_binary_images_and_requested_layers() -> None:
    images = [b"\x89PNG one", b"\x89PNG two"]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    request = parse({
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "features.1", "parameters": {"binary_data": True}}, {"name": "logits"}],
    }, raw)
    assert request.data == images
    assert request.layers(SIGNATURE) == ["features.1"]
    assert request.run_outputs(SIGNATURE) == ("logits", "features.1")
    assert request.binary_layers(SIGNATURE)


def test_base64_images_in_json() -> None:
    request = parse({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                                 "data": [base64.b64encode(b"jpeg bytes").decode()]}]})
    assert request.data == [b"jpeg bytes"]


@pytest.mark.parametrize("payload, words", [
    ({"inputs": [tensor_input([0.0] * 4, [1, 1, 2, 3])]}, "the model takes [-1, 1, 2, 2]"),
    ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1]}]},
     "unknown input 'pixels'; valid: input, image_bytes"),
    ({"inputs": [tensor_input([0.0] * 4, [1, 1, 2, 2])], "outputs": [{"name": "features.9"}]},
     "unknown output 'features.9'; valid: logits, features.1"),
    ({"inputs": [tensor_input([0.0] * 4, [1, 1, 2, 2])],
      "outputs": [{"name": "features.1", "parameters": {"classification": 2}}]}, "class output 'logits' only"),
])
def test_errors_say_what_to_send(payload: dict[str, object], words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse(payload)


def test_the_count_is_vetted_before_the_data_is_read() -> None:
    def refuse(count: int) -> None:
        raise PayloadTooLarge(f"{count} images")

    header = json.dumps({"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [10**6], "data": []}]})
    with pytest.raises(PayloadTooLarge, match="1000000 images"):
        oip.parse_request(header.encode(), None, SIGNATURE, refuse, max_images=64)


@pytest.mark.parametrize("text", ["0", "\u00b2", "\u0663", "1" * 5000, "-1", "1.0", "1234567890"])
def test_one_rule_for_versions(text: str) -> None:
    with pytest.raises(BadRequest, match="versions are positive integers"):
        oip.parse_version(text)


def test_versions_that_are_numbers() -> None:
    assert [oip.parse_version(v) for v in ("1", "007", "999999999", None)] == [1, 7, 999999999, None]


def test_response_json_binary_and_classification() -> None:
    request = parse({"id": "x", "inputs": [tensor_input([0.0] * 4, [1, 1, 2, 2])], "outputs": [
        {"name": "logits", "parameters": {"classification": 2}},
        {"name": "features.1", "parameters": {"binary_data": True}},
    ]})
    maps = np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2)
    logits = np.array([[0.5, 2.0, 2.0]], dtype=np.float32)
    response = oip.build_response(SIGNATURE, request, {"logits": logits, "features.1": maps})
    length = int(response.headers[oip.HEADER_LENGTH])
    header = orjson.loads(response.body[:length])
    assert header["model_name"] == "m" and header["model_version"] == "3" and header["id"] == "x"
    classes, features = header["outputs"]
    assert classes["data"] == ["2.0:1:dog", "2.0:2:fox"]  # ties go to the lower index
    assert features["parameters"]["binary_data_size"] == maps.nbytes
    assert np.array_equal(np.frombuffer(response.body[length:], dtype="<f4").reshape(maps.shape), maps)
    assert response.media_type == "application/octet-stream"
