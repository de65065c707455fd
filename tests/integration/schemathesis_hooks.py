"""What Schemathesis cannot learn from an OpenAPI document: what a valid image is, and which
tensors a model takes. Loaded by tests/integration/test_openapi.py (SCHEMATHESIS_HOOKS).

These extend the *generators*, never the checks: every check runs as it comes
(`--checks all`). A JSON schema can say "binary" or "base64" but not "decodable as an
image", so positive cases get real encoded images where the schema says an image goes; a v2
inference request's input names and shapes are the served model's (GET /v2/models/{name}),
so positive v2 cases name the model's real inputs and outputs. Negative cases are left as
Schemathesis makes them: the server must reject those.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _encoded(size: tuple[int, int], mode: str, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, format=fmt)
    return buffer.getvalue()


IMAGES = [
    _encoded((1, 1), "L", "PNG", 0),
    _encoded((8, 8), "L", "PNG", 1),
    _encoded((13, 21), "RGB", "JPEG", 2),
    _encoded((40, 32), "RGB", "PNG", 3),
    _encoded((9, 9), "L", "BMP", 4),
    _encoded((16, 16), "RGB", "WEBP", 5),
]
OUTPUTS = ["logits", "features.1", "features.2"]  # of the synthetic model the test serves

schemathesis.openapi.format("binary", st.sampled_from(IMAGES))
schemathesis.openapi.format("byte", st.sampled_from([base64.b64encode(i).decode() for i in IMAGES]))


def _positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


def _inference_request(seed: int) -> tuple[dict[str, Any], list[bytes]]:
    """A valid request for the synthetic model, picked by ``seed`` (the same case, the same request)."""
    rng = np.random.default_rng(seed)
    images = [IMAGES[i] for i in rng.integers(0, len(IMAGES), int(rng.integers(1, 4)))]
    outputs = [name for name in OUTPUTS if rng.random() < 0.5]
    request: dict[str, Any] = {"id": f"case-{seed % 1000}",
                               "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [len(images)]}]}
    if outputs:
        request["outputs"] = [{"name": name, "parameters": {"binary_data": bool(rng.random() < 0.5),
                                                            **({"classification": 2} if name == "logits" else {})}}
                              for name in outputs]
    return request, images


@schemathesis.hook("before_call").apply_to(path_regex=r"^/v2/models/.*/infer$")
def valid_inference_request(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Positive v2 cases (every phase) carry a real request for the served model, in the
    case's own media type: JSON with base64 images, or binary tensor data after a JSON header."""
    if not _positive(case):
        return
    request, images = _inference_request(zlib.crc32(repr(case.body).encode()))
    if case.media_type == "application/octet-stream":
        request["inputs"][0]["parameters"] = {"binary_data_size": sum(4 + len(i) for i in images)}
        header = json.dumps(request).encode()
        case.body = header + b"".join(struct.pack("<I", len(i)) + i for i in images)
        case.headers = {**(case.headers or {}), "Inference-Header-Content-Length": str(len(header))}
    else:
        request["inputs"][0]["data"] = [base64.b64encode(i).decode() for i in images]
        case.body = request


# The most passes any method needs at least on the synthetic model (RISE: the image, 16
# masks, 58 for faithfulness). A query can bound `passes` from above (the server's limit,
# in the schema) but cannot say that the least depends on `method` and `faithfulness`.
LEAST_EXPLAIN_PASSES = 1 + 16 + 58


@schemathesis.hook("before_call").apply_to(path_regex=r"/explain(\.png)?$")
def enough_passes(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Positive explanation cases that bound `passes` leave every method room for its least."""
    if not _positive(case) or not case.query or case.query.get("passes") is None:
        return
    try:
        passes = int(case.query["passes"])
    except (TypeError, ValueError):
        return
    if passes < LEAST_EXPLAIN_PASSES:
        case.query = {**case.query, "passes": LEAST_EXPLAIN_PASSES}
