"""What each channel detects, over HTTP: the channel view, its pictures, one channel's
filter, and the sample images a user can start from (issue 13).

Everything here is read from memory (``ServedModel.channel_view``, loaded with the
version) and never changes while the version is loaded, so every answer carries an ETag
and a conditional GET is answered 304 before any work. Where the URL names the version
(``/v1/models/{name}/versions/{v}/...``) the answer is immutable: a year's max-age. The
newest-version URLs revalidate (``no-cache``): their answer changes when a newer version
becomes the default. The JSON answers point at the versioned URLs, so the pictures a page
loads are the cacheable ones whichever URL it started from.

An artifact without a channel view (or samples) still serves: these routes answer 404
saying it was not computed and how to compute it (``channel_view.NotComputed``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, Field

from service.errors import NotFound
from service.http import auth
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.dataplane import DataPlane
from service.models.channel_view import MEDIA_TYPE, ChannelView
from service.models.registry import ServedModel
from service.routes import schemas
from service.routes.common import Plane, note_model
from service.routes.v1 import LayerName, ModelName, Version

router = APIRouter(tags=["channels"], dependencies=[auth.INFER])

# The tables index channels, ranks and pictures as int32 (docs/artifact.md).
MAX_INDEX = 2**31 - 1
# A training export stores at most 60 samples (docs/artifact.md, samples.npz).
MAX_SAMPLES = 60
IMMUTABLE = "max-age=31536000, immutable"  # the URL names the version: its answer never changes
REVALIDATE = "no-cache"  # the newest version's URL: ask each time, a 304 when unchanged
_DIGITS = re.compile(r"[0-9]{1,10}")
# What a route does with the model it resolved: a JSON body (dict) or PNG bytes.
Make = Callable[[ServedModel, ChannelView], Any]


def ascii_index(value: object) -> object:
    """Indexes in the path are plain ASCII digits: pydantic alone would also take " 1",
    "+1" or "1_0" (as 10), which the OpenAPI document does not allow."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("indexes are non-negative integers written in ASCII digits")
    return value


Channel = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Channel index, 0 .. the layer's channels - 1 "
                                                              "(output_shape[1] in GET /v1/models/{name}/layers)."),
                    BeforeValidator(ascii_index)]
Rank = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Rank among the channel's top images, 0 (strongest) "
                                                           ".. top_k - 1 (metadata `channel_view.top_k`)."),
                 BeforeValidator(ascii_index)]
SampleId = Annotated[int, Path(ge=0, le=MAX_SAMPLES - 1, description="Sample id, as listed by GET .../samples."),
                     BeforeValidator(ascii_index)]


# --- response shapes, for the OpenAPI document ----------------------------------------------

class Position(BaseModel):
    y: int
    x: int


class Box(BaseModel):
    left: int
    top: int
    right: int = Field(description="Exclusive.")
    bottom: int = Field(description="Exclusive.")


class TopEntry(BaseModel):
    rank: int = Field(description="0 = the strongest.")
    activation: float = Field(description="The channel's maximum over this image.")
    label: str = Field(description="The image's class in the held-out set.")
    image: int = Field(description="The image's index in the held-out split the export ranked.")
    position: Position | None = Field(description="Where the maximum is in the layer's map; null for a flat layer.")
    box: Box | None = Field(description="The input pixels that unit sees (its receptive field, clipped to the "
                                        "image); null where the geometry is unknown.")
    crop: bool = Field(description="true: the picture is the box's pixels only; false: the whole input.")
    image_url: str = Field(description="The stored picture (PNG, the model's input size and colour mode).")


class ChannelAnswer(BaseModel):
    layer: str
    channel: int
    images: int = Field(description="How many held-out images were ranked.")
    top: list[TopEntry] = Field(description="Activation descending.")
    top_png_url: str = Field(description="The top images as one picture, each with its box and label.")


class Sample(BaseModel):
    id: int
    label: str
    image_url: str


class SampleList(BaseModel):
    samples: list[Sample]


class ChannelFilter(BaseModel):
    layer: str
    channel: int
    conv: str | None = Field(description="The conv module whose filter made this channel.")
    shape: list[int] = Field(description="[in_channels, kernel_height, kernel_width].")
    reads_image: bool = Field(description="The conv reads the input image itself (the first layer): with 3 input "
                                          "channels the filter is a colour picture.")
    trained: list[list[list[float]]] = Field(description="The kernel as trained.")
    initial: list[list[list[float]]] | None = Field(description="The kernel when training began (null: not "
                                                                "recorded, no initial_weights.npz).")


CACHE_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "Changes whenever the answer could."},
    "Cache-Control": {"schema": {"type": "string"},
                      "description": f"`{IMMUTABLE}` where the URL names the version, else `{REVALIDATE}`."},
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified: the If-None-Match ETag still holds."}}


def _png_responses(what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {MEDIA_TYPE: {}}, "description": what, "headers": CACHE_HEADERS},
            **NOT_MODIFIED, **schemas.ERRORS}


def _json_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"response_model": model,
            "responses": {200: {"headers": CACHE_HEADERS}, **NOT_MODIFIED, **schemas.ERRORS}}


# --- the shared steps -----------------------------------------------------------------------

def versioned_base(model: ServedModel) -> str:
    """Where this version's pictures live: the URLs that can be cached for good."""
    return f"/v1/models/{quote(model.name, safe='')}/versions/{model.version}"


def _etag(model: ServedModel, request: Request) -> str:
    """The answer's identity: the artifact's files (by their checksums), the version and
    what was asked. Another export under the same version number changes it too."""
    files = model.runtime.metadata.files
    digest = hashlib.sha256()
    for filename in sorted(files):
        digest.update(f"{filename}:{files[filename].sha256}\n".encode())
    digest.update(f"{model.name}\n{model.version}\n{request.url.path}?{request.url.query}".encode())
    return f'"{digest.hexdigest()[:32]}"'


def _matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


class _Cached:
    """One conditional GET: the headers its answer carries, and the 304 when the client
    already holds it."""

    def __init__(self, request: Request, model: ServedModel, versioned: bool) -> None:
        self.headers = {"ETag": _etag(model, request), "Cache-Control": IMMUTABLE if versioned else REVALIDATE}
        self.fresh = _matches(request, self.headers["ETag"])

    def not_modified(self) -> Response:
        return Response(status_code=304, headers=self.headers)

    def json(self, body: dict[str, Any]) -> Response:
        return JSONResponse(body, headers=self.headers)

    def png(self, data: bytes) -> Response:
        return Response(data, media_type=MEDIA_TYPE, headers=self.headers)


async def _answer(request: Request, plane: DataPlane, name: str, version: int | None,
                  make: Make, kind: Literal["json", "png"], *, offload: Make | None = None) -> Response:
    """Resolve and hold the model, ``make`` the JSON body or PNG bytes (which also raises
    the 404s) and answer 304 instead when the client is up to date. ``offload``: ``make``
    only checks; this renders, on the data plane's pool, unless the answer is a 304."""
    note_model(request, name, version)
    with plane.serving(name, version) as model:
        note_model(request, model.name, model.version)
        cached = _Cached(request, model, versioned=version is not None)
        result = make(model, model.channel_view)
        if cached.fresh:
            return cached.not_modified()
        if offload is not None:
            result = await asyncio.get_running_loop().run_in_executor(plane.pool, offload, model, model.channel_view)
        return cached.json(result) if kind == "json" else cached.png(result)


# --- one channel ----------------------------------------------------------------------------

def _channel(layer: str, channel: int) -> Make:
    return lambda model, view: view.channel_json(layer, channel, versioned_base(model))


def _top_check(layer: str, channel: int) -> Make:
    return lambda model, view: view.top(layer, channel)


def _top_render(layer: str, channel: int) -> Make:
    # A first render draws k patches with Pillow (tens of ms at 224 px): off the loop.
    return lambda model, view: view.top_png(layer, channel)


def _top_image(layer: str, channel: int, rank: int) -> Make:
    return lambda model, view: view.top_image(layer, channel, rank)


CHANNEL_DOC: dict[str, Any] = dict(summary="The held-out images that excite one channel most", **_json_doc(ChannelAnswer))
TOP_PNG_DOC: dict[str, Any] = dict(summary="A channel's top images as one picture, with receptive-field boxes and labels",
                   response_class=Response, responses=_png_responses("The top images, each with its box and label."))
TOP_IMAGE_DOC: dict[str, Any] = dict(summary="One of a channel's top images (or its receptive-field crop), as stored",
                     response_class=Response, responses=_png_responses("The stored picture."))


@router.get("/v1/models/{name}/layers/{layer}/channels/{channel}", **CHANNEL_DOC)
async def channel_newest(request: Request, plane: Plane, name: ModelName, layer: LayerName,
                         channel: Channel) -> Response:
    return await _answer(request, plane, name, None, _channel(layer, channel), "json")


@router.get("/v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}", **CHANNEL_DOC)
async def channel_version(request: Request, plane: Plane, name: ModelName, version: Version, layer: LayerName,
                          channel: Channel) -> Response:
    return await _answer(request, plane, name, version, _channel(layer, channel), "json")


@router.get("/v1/models/{name}/layers/{layer}/channels/{channel}/top.png", **TOP_PNG_DOC)
async def top_png_newest(request: Request, plane: Plane, name: ModelName, layer: LayerName,
                         channel: Channel) -> Response:
    return await _answer(request, plane, name, None, _top_check(layer, channel), "png",
                         offload=_top_render(layer, channel))


@router.get("/v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/top.png", **TOP_PNG_DOC)
async def top_png_version(request: Request, plane: Plane, name: ModelName, version: Version, layer: LayerName,
                          channel: Channel) -> Response:
    return await _answer(request, plane, name, version, _top_check(layer, channel), "png",
                         offload=_top_render(layer, channel))


@router.get("/v1/models/{name}/layers/{layer}/channels/{channel}/top/{rank}", **TOP_IMAGE_DOC)
async def top_image_newest(request: Request, plane: Plane, name: ModelName, layer: LayerName, channel: Channel,
                           rank: Rank) -> Response:
    return await _answer(request, plane, name, None, _top_image(layer, channel, rank), "png")


@router.get("/v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/top/{rank}", **TOP_IMAGE_DOC)
async def top_image_version(request: Request, plane: Plane, name: ModelName, version: Version, layer: LayerName,
                            channel: Channel, rank: Rank) -> Response:
    return await _answer(request, plane, name, version, _top_image(layer, channel, rank), "png")


# --- one channel's filter -------------------------------------------------------------------

def channel_filter(model: ServedModel, layer: str, channel: int) -> dict[str, Any]:
    """The kernel that made one channel, as trained and (where recorded) before training:
    a person can read one filter of a deep layer, never all of them at once."""
    runtime = model.runtime
    trained = runtime.trained_filters(layer)
    if not 0 <= channel < trained.shape[0]:
        raise NotFound(f"layer {layer!r} of model {runtime.name} has {trained.shape[0]} channels; "
                       f"valid: 0..{trained.shape[0] - 1}, not {channel}")
    initial = runtime.initial_filters.get(layer)
    info = runtime.metadata.layer(layer)
    first = next(n for n in runtime.layer_names if n in runtime.filters)
    return {
        "layer": layer,
        "channel": channel,
        "conv": info.conv,
        "shape": list(trained.shape[1:]),
        "reads_image": layer == first and trained.shape[1] == runtime.spec.channels,
        "trained": _rounded(trained[channel]),
        "initial": None if initial is None else _rounded(initial[channel]),
    }


def _rounded(kernel: np.ndarray) -> list[list[list[float]]]:
    # Six significant digits are more than a picture needs and keep the answer short.
    values: list[list[list[float]]] = np.vectorize(lambda v: float(f"{v:.6g}"))(kernel).tolist()
    return values


def _filter(layer: str, channel: int) -> Make:
    return lambda model, view: channel_filter(model, layer, channel)


FILTER_DOC: dict[str, Any] = dict(summary="The filter (kernel) that made one channel, trained and before training",
                  **_json_doc(ChannelFilter))


@router.get("/v1/models/{name}/layers/{layer}/channels/{channel}/filter", **FILTER_DOC)
async def filter_newest(request: Request, plane: Plane, name: ModelName, layer: LayerName,
                        channel: Channel) -> Response:
    return await _answer(request, plane, name, None, _filter(layer, channel), "json")


@router.get("/v1/models/{name}/versions/{version}/layers/{layer}/channels/{channel}/filter", **FILTER_DOC)
async def filter_version(request: Request, plane: Plane, name: ModelName, version: Version, layer: LayerName,
                         channel: Channel) -> Response:
    return await _answer(request, plane, name, version, _filter(layer, channel), "json")


# --- samples --------------------------------------------------------------------------------

def _samples(model: ServedModel, view: ChannelView) -> dict[str, Any]:
    return view.samples_json(versioned_base(model))


def _sample(sample_id: int) -> Make:
    return lambda model, view: view.sample_image(sample_id)


SAMPLES_DOC: dict[str, Any] = dict(summary="A few held-out images per class, to start from", **_json_doc(SampleList))
SAMPLE_DOC: dict[str, Any] = dict(summary="One sample image, as stored (PNG, the model's input size and colour mode)",
                  response_class=Response, responses=_png_responses("The sample image."))


@router.get("/v1/models/{name}/samples", **SAMPLES_DOC)
async def samples_newest(request: Request, plane: Plane, name: ModelName) -> Response:
    return await _answer(request, plane, name, None, _samples, "json")


@router.get("/v1/models/{name}/versions/{version}/samples", **SAMPLES_DOC)
async def samples_version(request: Request, plane: Plane, name: ModelName, version: Version) -> Response:
    return await _answer(request, plane, name, version, _samples, "json")


@router.get("/v1/models/{name}/samples/{sample_id}", **SAMPLE_DOC)
async def sample_newest(request: Request, plane: Plane, name: ModelName, sample_id: SampleId) -> Response:
    return await _answer(request, plane, name, None, _sample(sample_id), "png")


@router.get("/v1/models/{name}/versions/{version}/samples/{sample_id}", **SAMPLE_DOC)
async def sample_version(request: Request, plane: Plane, name: ModelName, version: Version,
                         sample_id: SampleId) -> Response:
    return await _answer(request, plane, name, version, _sample(sample_id), "png")
