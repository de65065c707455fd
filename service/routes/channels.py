"""What each channel detects, over HTTP: the channel view, its pictures, one channel's
filter, and the sample images a user can start from.

Everything here is read from memory loaded with the version and never changes while it is
loaded, so every answer carries an ETag and a conditional GET is answered 304 (with no
picture drawn). Where the URL names the version (``/v1/models/{name}/versions/{v}/...``)
the answer is immutable: a year's max-age. The newest-version URLs revalidate
(``no-cache``): their answer changes when a newer version becomes the default. The JSON
answers point at the versioned URLs, so the pictures a page loads are the cacheable ones
whichever URL it started from.

An artifact without a channel view (or samples) still serves: these routes answer 404
saying it was not computed and how to compute it (``channel_view.NotComputed``).
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.codecs import v1
from service.handlers.results import ModelRef, Picture
from service.http import auth
from service.http.responses import FastJSONResponse as JSONResponse
from service.inference.workers import Workers
from service.models.channel_view import MEDIA_TYPE
from service.routes import schemas
from service.routes.deps import HandlersDep, WorkersDep, answered_by, note_model
from service.routes.params import Channel, LayerName, ModelName, Rank, SampleId, Version
from service.routes.table import ModelRoutes, VersionParameter

router = APIRouter(tags=["channels"], dependencies=[auth.INFER])
models = ModelRoutes(router, "/v1/models/{name}", VersionParameter(Version))

# The paths of this module, under a model's (versioned) prefix: registered below, and the
# links in the JSON answers are made from the same templates.
CHANNEL = "/layers/{layer}/channels/{channel}"
TOP_SHEET = CHANNEL + "/top.png"
TOP_IMAGE = CHANNEL + "/top/{rank}"
CHANNEL_FILTER = CHANNEL + "/filter"
SAMPLES = "/samples"
SAMPLE = SAMPLES + "/{sample_id}"

IMMUTABLE = "max-age=31536000, immutable"  # the URL names the version: its answer never changes
REVALIDATE = "no-cache"  # the newest version's URL: ask each time, a 304 when unchanged
CACHE_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "Changes whenever the answer could."},
    "Cache-Control": {"schema": {"type": "string"},
                      "description": f"`{IMMUTABLE}` where the URL names the version, else `{REVALIDATE}`."},
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified: the If-None-Match ETag still holds."}}


def _png_responses(what: str) -> dict[str, Any]:
    return {"response_class": Response,
            "responses": {200: {"content": {MEDIA_TYPE: {}}, "description": what, "headers": CACHE_HEADERS},
                          **NOT_MODIFIED, **schemas.ERRORS}}


def _json_doc(model: type[Any]) -> dict[str, Any]:
    return {"response_model": model,
            "responses": {200: {"headers": CACHE_HEADERS}, **NOT_MODIFIED, **schemas.ERRORS}}


class VersionLinks:
    """The versioned URLs of one version's pictures (v1.Links)."""

    def __init__(self, model: ModelRef) -> None:
        self.base = f"/v1/models/{quote(model.name, safe='')}/versions/{model.version}"

    def top_image(self, layer: str, channel: int, rank: int) -> str:
        return self.base + TOP_IMAGE.format(layer=quote(layer, safe=""), channel=channel, rank=rank)

    def top_sheet(self, layer: str, channel: int) -> str:
        return self.base + TOP_SHEET.format(layer=quote(layer, safe=""), channel=channel)

    def sample(self, sample_id: int) -> str:
        return self.base + SAMPLE.format(sample_id=sample_id)


class Conditional:
    """One conditional GET: the headers its answer carries, and whether the client holds it."""

    def __init__(self, request: Request, model: ModelRef, versioned: bool) -> None:
        answered_by(request, model)
        etag = f'"{model.digest}-{_request_key(request)}"'
        self.headers = {"ETag": etag, "Cache-Control": IMMUTABLE if versioned else REVALIDATE}
        self.fresh = _matches(request.headers.get("if-none-match"), etag)

    def json(self, make: Any, *args: Any) -> Response:
        if self.fresh:
            return Response(status_code=304, headers=self.headers)
        return JSONResponse(make(*args), headers=self.headers)

    async def png(self, picture: Picture, workers: Workers) -> Response:
        if self.fresh:
            return Response(status_code=304, headers=self.headers)
        data = await workers.offload(picture.make, size=picture.size)
        return Response(data, media_type=MEDIA_TYPE, headers=self.headers)


def _request_key(request: Request) -> str:
    return hashlib.sha256(f"{request.url.path}?{request.url.query}".encode()).hexdigest()[:16]


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


@models.operation("GET", CHANNEL, summary="The held-out images that excite one channel most",
                  **_json_doc(schemas.ChannelAnswer))
async def channel(request: Request, handlers: HandlersDep, name: ModelName, version: int | None,
                  layer: LayerName, channel: Channel) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.channel(name, version, layer, channel)
    return Conditional(request, result.model, version is not None).json(
        v1.channel, result, VersionLinks(result.model))


@models.operation("GET", TOP_SHEET, summary="A channel's top images as one picture, with receptive-field boxes "
                                            "and labels",
                  **_png_responses("The top images, each with its box and label."))
async def top_sheet(request: Request, handlers: HandlersDep, workers: WorkersDep, name: ModelName,
                    version: int | None, layer: LayerName, channel: Channel) -> Response:
    note_model(request, name, version)
    picture = handlers.introspection.top_sheet(name, version, layer, channel)
    return await Conditional(request, picture.model, version is not None).png(picture, workers)


@models.operation("GET", TOP_IMAGE, summary="One of a channel's top images (or its receptive-field crop), as stored",
                  **_png_responses("The stored picture."))
async def top_image(request: Request, handlers: HandlersDep, workers: WorkersDep, name: ModelName,
                    version: int | None, layer: LayerName, channel: Channel, rank: Rank) -> Response:
    note_model(request, name, version)
    picture = handlers.introspection.top_image(name, version, layer, channel, rank)
    return await Conditional(request, picture.model, version is not None).png(picture, workers)


@models.operation("GET", CHANNEL_FILTER,
                  summary="The filter (kernel) that made one channel, trained and before training",
                  **_json_doc(schemas.ChannelFilterAnswer))
async def channel_filter(request: Request, handlers: HandlersDep, name: ModelName, version: int | None,
                         layer: LayerName, channel: Channel) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.channel_filter(name, version, layer, channel)
    return Conditional(request, result.model, version is not None).json(v1.channel_filter, result)


@models.operation("GET", SAMPLES, summary="A few held-out images per class, to start from",
                  **_json_doc(schemas.SampleList))
async def samples(request: Request, handlers: HandlersDep, name: ModelName, version: int | None) -> Response:
    note_model(request, name, version)
    result = handlers.introspection.samples(name, version)
    return Conditional(request, result.model, version is not None).json(
        v1.samples, result, VersionLinks(result.model))


@models.operation("GET", SAMPLE, summary="One sample image, as stored (PNG, the model's input size and colour mode)",
                  **_png_responses("The sample image."))
async def sample(request: Request, handlers: HandlersDep, workers: WorkersDep, name: ModelName,
                 version: int | None, sample_id: SampleId) -> Response:
    note_model(request, name, version)
    picture = handlers.introspection.sample(name, version, sample_id)
    return await Conditional(request, picture.model, version is not None).png(picture, workers)
