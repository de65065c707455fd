"""The Open Inference Protocol (KServe v2 / Triton) REST codec.

Turns v2 requests into numpy tensors and model outputs back into v2 responses, with the
binary tensor data and classification extensions as Triton defines them. A pure
codec: it parses a request against a model's signature and builds the response from the
outputs; the route hands the parsed request to the data plane, which runs it exactly as
it runs v1 requests. Nothing here knows of the registry, the data plane or HTTP.

How convscope models look through v2:

* input ``<metadata input.name>`` (``input``): FP32 ``[-1, C, H, W]``, preprocessed pixels;
* input ``image_bytes``: BYTES ``[-1]`` (or ``[-1, 1]``), encoded images (JPEG, PNG, ...)
  that the server decodes and preprocesses as v1 does. A request carries exactly one of
  the two. As JSON ``data`` the images are base64 strings (JSON cannot carry raw bytes);
  as binary data they are raw, each element 4-byte little-endian length-prefixed;
* output ``<metadata output.name>`` (``logits``): FP32 ``[-1, num_classes]``, the only
  output returned when a request names none;
* one FP32 output per tapped layer, named as the layer (``features.1``), returned only
  when named in ``outputs`` (extension ``convscope_feature_maps``).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from service import __version__
from service.codecs.wire import decode_base64
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, one_of
from service.http.json_bounds import JsonBounds, loads
from service.models.signature import ModelSignature

SERVER_NAME = "convscope"
PLATFORM = "onnx_onnxv1"
IMAGE_INPUT = "image_bytes"
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = [
    "binary_tensor_data",  # Triton's: tensors as raw bytes after the JSON header
    "classification",  # Triton's: parameters.classification = k -> "value:index:label" strings
    "convscope_feature_maps",  # every tapped layer is an output, returned only when asked for
    "convscope_encoded_images",  # BYTES input image_bytes: encoded images, preprocessed as v1 does
    "model_repository",  # Triton's: POST /v2/repository/index, .../models/{name}/load and /unload
]

# Tensor data types of the protocol, with their numpy element types (BYTES: variable size).
DATATYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": None,  # no numpy type; never accepted here
    "BYTES": None,
}
UNSUPPORTED_PARAMETERS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


# -- discovery -----------------------------------------------------------------------------

# A version in a URL: 1 to 9 ASCII digits, at least 1 (str.isdigit() would accept
# superscripts and other scripts' digits, and int() refuses more than 4300 digits).
VERSION_PATTERN = r"^[0-9]{1,9}$"
_VERSION = re.compile(VERSION_PATTERN)


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def parse_version(text: str | None) -> int | None:
    """A version from the URL: a positive integer (the protocol's versions are strings)."""
    if text is None:
        return None
    if not _VERSION.fullmatch(text) or int(text) < 1:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise BadRequest(f"model version {shown!r} is not valid: versions are positive integers (1 to 999999999)")
    return int(text)


def model_metadata(signature: ModelSignature, versions: Sequence[int]) -> dict[str, Any]:
    """$metadata_model_response."""
    outputs = [_tensor_meta(signature.output_name, "FP32", [-1, len(signature.labels)])]
    outputs += [_tensor_meta(layer.name, "FP32", [-1, *layer.shape]) for layer in signature.layers]
    return {
        "name": signature.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            _tensor_meta(signature.input_name, "FP32", [-1, *signature.input_shape]),
            _tensor_meta(IMAGE_INPUT, "BYTES", [-1]),
        ],
        "outputs": outputs,
    }


def _tensor_meta(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


# -- requests ------------------------------------------------------------------------------


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's binary_data_output decides
    classification: int = 0  # 0: the tensor itself; k: the top k as "value:index:label"


@dataclass
class InferenceRequest:
    """A parsed infer request: a float32 batch or encoded images, and what to return."""

    id: str | None
    outputs: list[RequestedOutput]
    data: NDArray[np.float32] | list[bytes] = field(default_factory=list)  # a tensor, or images
    binary_output_default: bool = False

    @property
    def batch_size(self) -> int:
        return len(self.data) if isinstance(self.data, list) else int(self.data.shape[0])

    def layers(self, signature: ModelSignature) -> list[str]:
        """The feature-map outputs asked for, in request order."""
        return [o.name for o in self.outputs if o.name != signature.output_name]

    def run_outputs(self, signature: ModelSignature) -> tuple[str, ...]:
        """The graph outputs to run: the class output always (it is what classification and
        v1 share batches on), then the layers."""
        return (signature.output_name, *self.layers(signature))

    def binary_layers(self, signature: ModelSignature) -> bool:
        """Whether every requested layer goes back as binary data (for the size budget)."""
        return all(self.binary_for(o) for o in self.outputs if o.name != signature.output_name)

    def binary_for(self, output: RequestedOutput) -> bool:
        return self.binary_output_default if output.binary is None else output.binary


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo a gzip or deflate Content-Encoding (tritonclient's request compression),
    refusing to inflate past ``limit`` bytes."""
    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported; send gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if coding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {coding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the body inflates to over {limit} bytes (CONVSCOPE_MAX_BODY_BYTES)")
    if not inflater.eof:
        raise BadRequest(f"the {coding} body is truncated")
    return out


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary tensor data) per the binary tensor data extension."""
    if not body:
        raise BadRequest("the body is empty: send an inference request ($inference_request JSON)")
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} {header_length!r} is not a number") from None
    if size < 0 or size > len(body):
        raise BadRequest(f"{HEADER_LENGTH} is {size}, but the body holds {len(body)} bytes")
    return body[:size], body[size:]


def json_bounds(signature: ModelSignature, max_images: int) -> JsonBounds:
    """The most a valid request's JSON holds for this model: ``max_images`` images as base64
    strings, or their tensor as numbers (flat, or nested [N][C][H][W]), and room for the
    names, parameters and requested outputs around them."""
    channels, height, width = signature.input_shape
    values = max_images * channels * height * width
    outputs = len(signature.output_names)
    return JsonBounds(
        strings=max_images + 64 + 16 * outputs,
        items=max(values, max_images) + 64 + 16 * outputs,
        containers=max_images * (channels * height + channels + 1) + 16 + 4 * outputs,
        depth=12,
    )


def parse_request(body: bytes, header_length: str | None, signature: ModelSignature,
                  check_count: Callable[[int], None], max_images: int) -> InferenceRequest:
    """Parse and check an $inference_request (JSON, optionally followed by binary data)
    against the model. Every problem is a BadRequest that says what to send instead.
    The JSON's structure is bounded by what ``max_images`` images can need before it is
    parsed; ``check_count`` vets the batch size before any data is read."""
    header, binary = split_body(body, header_length)
    hint = "" if header_length is not None else f" (binary tensor data needs the {HEADER_LENGTH} header)"
    payload = loads(header, json_bounds(signature, max_images), "the inference request", hint)
    if not isinstance(payload, dict):
        raise BadRequest("the inference request must be a JSON object with \"inputs\"")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest('"id" must be a string')
    parameters = _parameters(payload.get("parameters"), "the request")
    binary_default = _flag(parameters, "binary_data_output", "the request")
    request = InferenceRequest(
        id=request_id,
        outputs=_requested_outputs(payload.get("outputs"), signature),
        binary_output_default=binary_default,
    )
    _read_inputs(request, payload.get("inputs"), binary, header_length is not None, signature, check_count)
    return request


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: parameters must be a JSON object")
    for key in UNSUPPORTED_PARAMETERS:
        if key in value:
            raise BadRequest(f"{where}: shared memory ({key}) is not supported; send the data in the body")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: parameters.{key} must be true or false")
    return value


def _requested_outputs(value: Any, model: ModelSignature) -> list[RequestedOutput]:
    if value is None:
        return [RequestedOutput(model.output_name)]
    if not isinstance(value, list) or not value:
        raise BadRequest('"outputs" must be a non-empty list of {"name": ...}, or left out for the class output')
    valid = model.output_names
    seen: set[str] = set()
    outputs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f'outputs[{i}] must be an object with a "name"')
        name = item["name"]
        if name not in valid:
            raise BadRequest(one_of("output", name, valid) + f" (model {model.name})")
        if name in seen:
            raise BadRequest(f"output {name!r} is requested twice")
        seen.add(name)
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise BadRequest(f"output {name!r}: binary_data must be true or false")
        count = parameters.get("classification", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise BadRequest(f"output {name!r}: classification must be a positive integer (how many classes)")
        if count and name != model.output_name:
            raise BadRequest(
                f"classification applies to the class output {model.output_name!r} only, not {name!r}"
            )
        outputs.append(RequestedOutput(name, binary=binary, classification=count))
    return outputs


def _read_inputs(request: InferenceRequest, value: Any, binary: bytes, has_header: bool,
                 model: ModelSignature, check_count: Callable[[int], None]) -> None:
    tensor_name = model.input_name
    if not isinstance(value, list) or not value:
        raise BadRequest(f'"inputs" must be a non-empty list: send {tensor_name!r} (FP32) or {IMAGE_INPUT!r} (BYTES)')
    if len(value) > 1:
        names = [item.get("name") if isinstance(item, dict) else None for item in value]
        raise BadRequest(
            f"send exactly one input, {tensor_name!r} (FP32 tensor) or {IMAGE_INPUT!r} (encoded images), "
            f"not {len(value)} ({', '.join(map(repr, names))})"
        )
    item = value[0]
    if not isinstance(item, dict):
        raise BadRequest("inputs[0] must be an object with name, shape, datatype and data")
    name = item.get("name")
    if name not in (tensor_name, IMAGE_INPUT):
        raise BadRequest(one_of("input", str(name), [tensor_name, IMAGE_INPUT]) + f" (model {model.name})")
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}; valid: {', '.join(DATATYPES)}")
    shape = _shape(item.get("shape"), name)
    parameters = _parameters(item.get("parameters"), f"input {name!r}")
    raw = _binary_section(item, name, parameters, binary, has_header)

    if name == tensor_name:
        if datatype != "FP32":
            raise BadRequest(f"input {name!r} must be FP32, not {datatype}")
        expected = [-1, *model.input_shape]
        if len(shape) != 4 or shape[1:] != list(model.input_shape):
            raise BadRequest(f"input {name!r} has shape {shape}; the model takes {expected} (N, C, H, W)")
        check_count(shape[0])
        request.data = _fp32(item, name, shape, raw)
    else:
        if datatype != "BYTES":
            raise BadRequest(f"input {IMAGE_INPUT!r} must be BYTES (encoded images), not {datatype}")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise BadRequest(f"input {IMAGE_INPUT!r} has shape {shape}; send [N] or [N, 1], one encoded image each")
        check_count(shape[0])
        request.data = _images(item, shape[0], raw)


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    return value


def _binary_section(item: dict[str, Any], name: str, parameters: dict[str, Any], binary: bytes, has_header: bool) -> bytes | None:
    """This input's raw bytes when it comes as binary data, else None. With one input,
    its bytes are the whole binary section."""
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise BadRequest(f'input {name!r} has neither "data" nor parameters.binary_data_size')
        if binary:
            raise BadRequest(f"the body holds {len(binary)} bytes after the JSON header that no input claims")
        return None
    if "data" in item:
        raise BadRequest(f'input {name!r} has both "data" and parameters.binary_data_size: send one')
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
    if not has_header:
        raise BadRequest(f"input {name!r} is binary data, but the request has no {HEADER_LENGTH} header")
    if size != len(binary):
        raise BadRequest(
            f"input {name!r} declares binary_data_size {size}, but {len(binary)} bytes follow the JSON header"
        )
    return binary


def _fp32(item: dict[str, Any], name: str, shape: list[int], raw: bytes | None) -> NDArray[np.float32]:
    tensor = _fp32_values(item, name, shape, raw)
    if not np.isfinite(tensor).all():
        # Not the model's fault: refused here, so a non-finite output always means a faulty model.
        raise BadRequest(f"input {name!r} holds NaN or infinite values; send finite pixels")
    return tensor


def _fp32_values(item: dict[str, Any], name: str, shape: list[int], raw: bytes | None) -> NDArray[np.float32]:
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * 4:
            raise BadRequest(
                f"input {name!r} of shape {shape} needs {count * 4} bytes of FP32 data, not {len(raw)}"
            )
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)  # a copy: aligned, writable
    try:
        array = np.asarray(item["data"])
    except (ValueError, TypeError):
        raise BadRequest(f"input {name!r}: data must be a (flat or nested) list of numbers") from None
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"input {name!r}: data must be a (flat or nested) list of numbers")
    if array.size != count:
        raise BadRequest(f"input {name!r} has shape {shape} ({count} values), but data holds {array.size}")
    return array.astype(np.float32).reshape(shape)


def _images(item: dict[str, Any], count: int, raw: bytes | None) -> list[bytes]:
    if raw is not None:
        images = deserialize_bytes(raw)
    else:
        data = item["data"]
        strings = list(_flatten(data)) if isinstance(data, list) else None
        if strings is None or not all(isinstance(s, str) for s in strings):
            raise BadRequest(f"input {IMAGE_INPUT!r}: data must be a list of base64 strings (encoded images)")
        images = [decode_base64(s, f"{IMAGE_INPUT}[{i}]") for i, s in enumerate(strings)]
    if len(images) != count:
        raise BadRequest(f"input {IMAGE_INPUT!r} declares {count} images in its shape, but holds {len(images)}")
    return images


def _flatten(data: list[Any]) -> Iterator[Any]:
    for value in data:
        if isinstance(value, list):
            yield from _flatten(value)
        else:
            yield value


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """BYTES binary data: each element a 4-byte little-endian length, then its bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest("BYTES binary data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"a BYTES element declares {length} bytes, but only {len(raw) - offset} remain")
        out.append(raw[offset:offset + length])
        offset += length
    return out


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(s)) + s for s in items)


# -- responses -----------------------------------------------------------------------------


def classify(values: NDArray[np.float32], labels: Sequence[str], k: int) -> list[list[bytes]]:
    """The classification extension: per row, the k highest values as "value:index:label",
    value as the model output it (the logit), highest first, ties to the lower index."""
    rows = []
    for row in values:
        best = np.argsort(-row, kind="stable")[:k]
        rows.append([f"{row[i]!s}:{i}:{labels[i]}".encode() for i in best])
    return rows


@dataclass
class EncodedResponse:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


def build_response(model: ModelSignature, request: InferenceRequest,
                   results: Mapping[str, NDArray[np.float32]]) -> EncodedResponse:
    """$inference_response for the requested outputs, in the order requested; binary
    outputs follow the JSON header, in the same order."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for wanted in request.outputs:
        values = results[wanted.name]
        binary = request.binary_for(wanted)
        out: dict[str, Any] = {"name": wanted.name}
        if wanted.classification:
            rows = classify(values, model.labels, wanted.classification)
            out.update(datatype="BYTES", shape=[len(rows), len(rows[0]) if rows else 0])
            if binary:
                chunks.append(serialize_bytes([s for row in rows for s in row]))
            else:
                out["data"] = [s.decode() for row in rows for s in row]
        else:
            array = np.ascontiguousarray(values, dtype="<f4")
            out.update(datatype="FP32", shape=list(array.shape))
            if binary:
                chunks.append(array.tobytes())
            else:  # finite: the data plane refuses a model's NaN before any codec sees it
                out["data"] = array.ravel()  # orjson writes numpy arrays natively
        if binary:
            out["parameters"] = {"binary_data_size": len(chunks[-1])}
        outputs.append(out)
    body: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(header)
    return EncodedResponse(
        b"".join([header, *chunks]),
        {HEADER_LENGTH: str(len(header))},
        "application/octet-stream",
    )
