"""Triton's model repository extension over REST, so ``tritonclient``'s
``get_model_repository_index``, ``load_model`` and ``unload_model`` work unchanged:

* ``POST /v2/repository/index``: every version on disk or loaded, with its state
  (``READY``, ``LOADING``, ``UNLOADING``, ``UNAVAILABLE``) and the reason for it;
* ``POST /v2/repository/models/{name}/load``: read that model's versions from disk again;
* ``POST /v2/repository/models/{name}/unload``: unload it until it is loaded again.

Every one needs a key of scope ``admin``; with no key configured they are disabled.
The repository handler does the work; this module only speaks the protocol.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.errors import BadRequest
from service.http import auth
from service.http.requests import read_body
from service.http.responses import FastJSONResponse as JSONResponse
from service.models.registry import IndexEntry, ModelState
from service.routes import schemas
from service.routes.deps import HandlersDep, note_model
from service.routes.params import ModelName

router = APIRouter(tags=["repository"], dependencies=[auth.ADMIN])
# A control request is a small JSON object; nothing larger is read.
MAX_CONTROL_BODY = 64 * 1024

TRITON_STATES: dict[ModelState, str] = {
    ModelState.LOADING: "LOADING",
    ModelState.READY: "READY",
    ModelState.UNLOADING: "UNLOADING",
    ModelState.FAILED: "UNAVAILABLE",
    ModelState.UNLOADED: "UNAVAILABLE",
}


class IndexItem(BaseModel):
    name: str
    version: str
    state: Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]
    reason: str = Field(description="Why the version is in this state; empty when ready.")


def _body(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    """An optional JSON object body with exactly these properties (anything else is a 400)."""
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": False, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def _parameters_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": {"type": "object", "properties": properties, "additionalProperties": False}}


INDEX_BODY = _body("Optional; tritonclient sends an empty body.",
                   {"ready": {"type": "boolean", "description": "Only versions ready for inference."}})
LOAD_BODY = _body("Optional. Triton's `config` and `file:` parameters are not supported: a version's "
                  "configuration is its metadata.json.", _parameters_schema({}))
UNLOAD_BODY = _body("Optional.", _parameters_schema(
    {"unload_dependents": {"type": "boolean", "description": "Accepted; convscope models have no dependents."}}))


CONTROL_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404, 413)}


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (tritonclient sends none for the index)."""
    body = await read_body(request, MAX_CONTROL_BODY)
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the body is not a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def _parameters(payload: dict[str, Any], allowed: dict[str, type]) -> dict[str, Any]:
    unknown_keys = sorted(set(payload) - {"parameters"})
    if unknown_keys:
        raise BadRequest(f"unknown field(s) {', '.join(unknown_keys)}; valid: parameters")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest('"parameters" must be an object')
    for key, value in parameters.items():
        if key == "config" or key.startswith("file:"):
            raise BadRequest(f"parameter {key!r} is not supported: convscope loads a model from its own files in "
                             "the repository (docs/artifact.md)")
        if key not in allowed:
            raise BadRequest(f"unknown parameter {key!r}; valid: {', '.join(allowed) or '(none)'}")
        if not isinstance(value, allowed[key]):
            raise BadRequest(f"parameter {key!r} must be a {allowed[key].__name__}")
    return parameters


def _item(entry: IndexEntry) -> dict[str, str]:
    if entry.state is None:
        state, reason = "UNAVAILABLE", "not loaded: POST /v2/repository/models/{}/load loads it".format(entry.name)
    else:
        state, reason = TRITON_STATES[entry.state], entry.reason or ""
    return {"name": entry.name, "version": str(entry.version), "state": state, "reason": reason}


@router.post("/v2/repository/index", summary="Every model version on disk or loaded, with its state",
             response_model=list[IndexItem], responses=CONTROL_ERRORS,
             openapi_extra=INDEX_BODY)
async def index(request: Request, handlers: HandlersDep) -> Response:
    payload = await _json_object(request)
    unknown_keys = sorted(set(payload) - {"ready"})
    if unknown_keys:
        raise BadRequest(f"unknown field(s) {', '.join(unknown_keys)}; valid: ready")
    ready_only = payload.get("ready", False)
    if not isinstance(ready_only, bool):
        raise BadRequest('"ready" must be true or false')
    return JSONResponse([_item(e) for e in await handlers.repository.index(ready_only)])


@router.post("/v2/repository/models/{name}/load", summary="Load a model's versions from disk (again)",
             response_class=Response, responses={200: {"description": "Loaded: every version on disk is ready."},
                                                 **CONTROL_ERRORS},
             openapi_extra=LOAD_BODY)
async def load(request: Request, handlers: HandlersDep, name: ModelName) -> Response:
    note_model(request, name, None)
    _parameters(await _json_object(request), {})
    await handlers.repository.load(name)
    return Response(status_code=200)


@router.post("/v2/repository/models/{name}/unload",
             summary="Unload a model once its requests have ended; it answers 503 until loaded again",
             response_class=Response, responses={200: {"description": "Unloaded."}, **CONTROL_ERRORS},
             openapi_extra=UNLOAD_BODY)
async def unload(request: Request, handlers: HandlersDep, name: ModelName) -> Response:
    note_model(request, name, None)
    _parameters(await _json_object(request), {"unload_dependents": bool})
    await handlers.repository.unload(name)
    return Response(status_code=200)
