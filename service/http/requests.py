"""Reading what clients send: a size-limited body, the images in it, and the rule that
work for a client who has gone away is dropped."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from service.codecs.wire import decode_base64
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.http.hangup import HANGUP, Hangup
from service.http.json_bounds import JsonBounds, loads
from service.inference.limits import RequestLimits
from service.inference.workers import Workers

T = TypeVar("T")

IMAGE_CONTENT_TYPES = "image/* (jpeg, png, webp, bmp, gif), application/octet-stream, multipart/form-data, application/json"


class ClientGone(Exception):
    """The client disconnected before its answer was ready: its work is dropped and the app
    answers 499 (nobody reads it; the metrics count a dropped request)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if declared_size > limit:
            raise PayloadTooLarge(
                f"the body is {declared_size} bytes; the limit is {limit} (CONVSCOPE_MAX_BODY_BYTES)"
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is over the limit of {limit} bytes (CONVSCOPE_MAX_BODY_BYTES)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None  # gone during its upload (or its body was cut off as malformed)
    body = b"".join(chunks)
    # Starlette's form parser replays a cached body: keep it where request.form() looks.
    request._body = body
    return body


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class RequestReader:
    """Reads what clients send, within the request limits: bodies, and the images in them."""

    def __init__(self, limits: RequestLimits, workers: Workers) -> None:
        self.limits = limits
        self.workers = workers

    async def body(self, request: Request, limit: int | None = None) -> bytes:
        return await read_body(request, self.limits.max_body_bytes if limit is None else limit)

    async def images(self, request: Request) -> list[bytes]:
        """The encoded images a request carries, in order.

        Raw body (image/* or application/octet-stream): one image. multipart/form-data: every
        part named ``image``. JSON: ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}``.
        """
        limit = self.limits.max_body_bytes
        kind = media_type(request)
        if not kind:
            raise UnsupportedMediaType(f"no Content-Type; send one of: {IMAGE_CONTENT_TYPES}")
        if not (kind.startswith("image/") or kind in ("application/octet-stream", "multipart/form-data",
                                                       "application/json")):
            raise UnsupportedMediaType(f"Content-Type {kind} is not accepted; send one of: {IMAGE_CONTENT_TYPES}")
        body = await read_body(request, limit)
        if kind.startswith("image/") or kind == "application/octet-stream":
            if not body:
                raise BadRequest("the body is empty: send the image's bytes")
            return [body]
        if kind == "application/json":
            return await self.workers.parse(_images_from_json, body, self.limits.max_images, size=len(body))
        return await _images_from_multipart(request, limit)

    async def one_image(self, request: Request, purpose: str) -> bytes:
        """The single image of a request that takes one (``purpose``: "to explain", ...)."""
        images = await self.images(request)
        if len(images) != 1:
            raise BadRequest(f"send exactly one image {purpose}, not {len(images)}")
        return images[0]


def json_bounds(max_images: int) -> JsonBounds:
    """The most a valid JSON body holds: ``{"images": [...]}`` with up to ``max_images``
    base64 strings, and room for a few fields of the client's own that are ignored."""
    return JsonBounds(strings=max_images + 32, items=max_images + 64, containers=16, depth=8)


def _images_from_json(body: bytes, max_images: int) -> list[bytes]:
    payload: Any = loads(body, json_bounds(max_images), "the body")
    if not isinstance(payload, dict):
        raise BadRequest('JSON body must be an object: {"image": "<base64>"} or {"images": [...]}')
    if "images" in payload and "image" in payload:
        raise BadRequest('send "image" (one base64 image) or "images" (a list), not both')
    if "images" in payload:
        items = payload["images"]
        if not isinstance(items, list) or not items:
            raise BadRequest('"images" must be a non-empty list of base64 strings')
        return [decode_base64(item, f"images[{i}]") for i, item in enumerate(items)]
    if "image" in payload:
        return [decode_base64(payload["image"], '"image"')]
    raise BadRequest('JSON body needs "image" (base64) or "images" (list of base64)')


async def _images_from_multipart(request: Request, limit: int) -> list[bytes]:
    try:
        form = await request.form(max_files=1000, max_fields=1000, max_part_size=limit)
    except Exception as exc:  # starlette raises its own MultiPartException/HTTPException types
        raise BadRequest(f"the multipart body cannot be parsed: {getattr(exc, 'detail', exc)}") from None
    try:
        parts = form.getlist("image")
        if not parts:
            raise BadRequest(f"multipart body has no field named 'image' (fields: {', '.join(form.keys()) or 'none'})")
        images = []
        for part in parts:
            if isinstance(part, UploadFile):
                images.append(await part.read())
            else:
                # Starlette decodes a text part as UTF-8 when it can, else as latin-1: undo either.
                try:
                    images.append(part.encode("latin-1"))
                except UnicodeEncodeError:
                    images.append(part.encode("utf-8"))
        return images
    finally:
        await form.close()


async def unless_client_gone(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, but cancel it (leaving the model's queue) if the client disconnects.

    Call only after the body has been read: from then on the only message the server
    can receive is the disconnect. Under the service's own HTTP protocol the work runs in
    the request's task and the protocol's ``Hangup`` cancels it; elsewhere (another server,
    a test client) a second task waits for ``http.disconnect``.
    """
    hangup = request.scope.get(HANGUP)
    if not isinstance(hangup, Hangup):
        return await _watching(request, work)
    if hangup.happened:
        if inspect.iscoroutine(work):
            work.close()
        raise ClientGone()
    task = asyncio.current_task()
    assert task is not None
    cancelled = False

    def hang_up() -> None:
        nonlocal cancelled
        cancelled = True
        task.cancel()

    hangup.listen(hang_up)
    try:
        return await work
    except asyncio.CancelledError:
        # Ours (and nobody else's, such as the server shutting down): the client has gone.
        if cancelled and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        hangup.forget()


async def _watching(request: Request, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
