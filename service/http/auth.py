"""API keys, and what each route needs of the caller.

Every route declares its access once, as a dependency of its router or of itself
(``dependencies=[auth.INFER]``); ``install`` refuses to start an app with a route that
declares none or two, and writes the declarations into the OpenAPI document. The gate
reads only the ``Authorization`` header, before any body is read.

Keys come from ``CONVSCOPE_API_KEYS_FILE`` and ``CONVSCOPE_API_KEYS`` (``<key>:<scope>``,
scope ``infer`` or ``admin``; ``admin`` can do everything ``infer`` can). Only their SHA-256
digests are kept; a presented key is hashed and compared with every digest in constant time,
so neither the time taken nor any message tells which key or how much of one matched. Keys
are never logged and never repeated in an error.

Without keys inference is open, as before keys existed, and the repository control calls are
disabled: they answer 403 saying how to turn them on. Control is never open by default.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from service.errors import Forbidden, Unauthorized

# Short keys are guessable; 16 characters is what `openssl rand -hex 8` gives.
MIN_KEY_LENGTH = 16


class Scope(StrEnum):
    INFER = "infer"
    ADMIN = "admin"


class Access(StrEnum):
    """What a route needs of its caller."""

    PROBE = "probe"  # liveness and readiness: always open, and answered during a drain
    PUBLIC = "public"  # the explorer page and the API docs: no model data in them
    METRICS = "metrics"  # open unless CONVSCOPE_METRICS_REQUIRE_KEY (then a key of any scope)
    INFER = "infer"  # predictions, feature maps, filters, metadata: a key of scope infer or admin
    ADMIN = "admin"  # repository control: a key of scope admin; disabled when no key is configured


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    scope: Scope


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(entries: Iterable[str], source: str, unit: str = "line") -> list[ApiKey]:
    """``<key>:<scope>`` entries (blank ones and ``#`` comments skipped). A bad entry is a
    ValueError naming where it is and what is wrong, never what it holds."""
    keys: list[ApiKey] = []
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(entries, 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{source}, {unit} {number}"
        key, colon, scope = entry.rpartition(":")
        if not colon or not key:
            raise ValueError(f"{where}: expected <key>:<scope> with scope infer or admin")
        if scope not in {s.value for s in Scope}:
            raise ValueError(f"{where}: the text after the last ':' is not a scope; valid: infer, admin")
        if not all("!" <= c <= "~" for c in key):
            raise ValueError(f"{where}: a key may hold printable ASCII only, without spaces")
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"{where}: the key is {len(key)} characters long; use at least {MIN_KEY_LENGTH} "
                             "(for example `openssl rand -hex 16`)")
        digest = _digest(key)
        if digest in seen:
            raise ValueError(f"{where}: the same key is already on {unit} {seen[digest]}")
        seen[digest] = number
        keys.append(ApiKey(digest, Scope(scope)))
    return keys


@dataclass(frozen=True)
class KeyRing:
    """The configured keys, as digests."""

    keys: tuple[ApiKey, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, keys_file: Path | None, inline: str | None) -> KeyRing:
        """The keys of CONVSCOPE_API_KEYS_FILE and CONVSCOPE_API_KEYS; a ValueError that says
        what is wrong (never with a key in it) when either cannot be used."""
        keys: list[ApiKey] = []
        if keys_file is not None:
            try:
                text = keys_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"CONVSCOPE_API_KEYS_FILE {keys_file} cannot be read: "
                                 f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
            keys += parse_keys(text.splitlines(), f"CONVSCOPE_API_KEYS_FILE {keys_file}")
            if not keys:
                raise ValueError(f"CONVSCOPE_API_KEYS_FILE {keys_file} holds no key: add lines of <key>:<scope>")
        if inline is not None:
            listed = parse_keys(inline.split(","), "CONVSCOPE_API_KEYS", "entry")
            if not listed:
                raise ValueError("CONVSCOPE_API_KEYS holds no key: give <key>:<scope>, comma separated")
            known = {k.digest for k in keys}
            if any(k.digest in known for k in listed):
                raise ValueError("a key of CONVSCOPE_API_KEYS is also in CONVSCOPE_API_KEYS_FILE: keep it in one place")
            keys += listed
        return cls(tuple(keys))

    def scope_of(self, presented: str) -> Scope | None:
        """The scope of a presented key, or None. Every configured digest is compared, with
        ``hmac.compare_digest``, whether or not an earlier one matched."""
        digest = _digest(presented)
        found: Scope | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key.scope
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme in any case), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


ENABLE_HINT = "set CONVSCOPE_API_KEYS_FILE (or CONVSCOPE_API_KEYS) to lines of <key>:<scope>"


@dataclass(frozen=True)
class AccessPolicy:
    """Decides, from the keys and the settings, whether a caller may use a route."""

    keys: KeyRing = KeyRing()
    metrics_require_key: bool = False

    def needs_key(self, access: Access) -> bool:
        if access is Access.METRICS:
            return self.metrics_require_key
        if access in (Access.INFER, Access.ADMIN):
            return bool(self.keys)
        return False

    def check(self, access: Access, authorization: str | None) -> None:
        if access is Access.ADMIN and not self.keys:
            raise Forbidden(f"repository control is disabled because no API key is configured: {ENABLE_HINT}, "
                            "one of them with scope admin, and send it as `Authorization: Bearer <key>`")
        if not self.needs_key(access):
            return
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("this call needs an API key: send `Authorization: Bearer <key>`")
        scope = self.keys.scope_of(token)
        if scope is None:
            raise Unauthorized("the API key sent is not valid", invalid_token=True)
        if access is Access.ADMIN and scope is not Scope.ADMIN:
            raise Forbidden("this call needs a key of scope admin; the key sent has scope infer")


class AccessGate:
    """The dependency a route declares its access with."""

    def __init__(self, access: Access) -> None:
        self.access = access

    async def __call__(self, request: Request) -> None:
        policy: AccessPolicy = request.app.state.access_policy
        policy.check(self.access, request.headers.get("authorization"))


PROBE = Depends(AccessGate(Access.PROBE))
PUBLIC = Depends(AccessGate(Access.PUBLIC))
METRICS = Depends(AccessGate(Access.METRICS))
INFER = Depends(AccessGate(Access.INFER))
ADMIN = Depends(AccessGate(Access.ADMIN))


def declared(route: BaseRoute | None) -> list[Access]:
    """The accesses a route declares (one, in a well-formed app)."""
    if not isinstance(route, APIRoute):
        return []
    return [d.dependency.access for d in route.dependencies
            if isinstance(d, DependsParam) and isinstance(d.dependency, AccessGate)]


def access_of(route: BaseRoute | None) -> Access | None:
    found = declared(route)
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class RouteInfo:
    route: APIRoute
    path: str
    methods: frozenset[str]
    in_schema: bool


def api_routes(app: FastAPI) -> list[RouteInfo]:
    """Every API route of the app, with its full path. Recent FastAPI keeps an included
    router as one entry of ``app.routes`` and resolves its routes lazily; older releases copy
    them in. The route itself is what requests see as ``scope["route"]``."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:
        return [RouteInfo(r, r.path_format, frozenset(r.methods or ()), r.include_in_schema)
                for r in app.routes if isinstance(r, APIRoute)]
    found = []
    for context in iterate(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            found.append(RouteInfo(route, context.path_format or route.path_format,
                                   frozenset(context.methods or ()), bool(context.include_in_schema)))
    return found


def install(app: FastAPI, policy: AccessPolicy) -> None:
    """Put the policy where the gates find it; refuse routes without exactly one declared
    access (a route added without one would otherwise be open by accident)."""
    app.state.access_policy = policy
    wrong = [f"{sorted(r.methods)} {r.path}" for r in api_routes(app) if len(declared(r.route)) != 1]
    if wrong:
        raise RuntimeError("routes must declare exactly one access (dependencies=[auth.INFER] or another "
                           f"of auth's): {', '.join(wrong)}")


def document(schema: dict[str, Any], app: FastAPI, policy: AccessPolicy) -> None:
    """Write each operation's key requirement and its 401/403 answers into the OpenAPI schema."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "An API key from CONVSCOPE_API_KEYS_FILE / CONVSCOPE_API_KEYS.",
    }
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for info in api_routes(app):
        access = access_of(info.route)
        if access is None or not info.in_schema:
            continue
        for method in info.methods:
            operation = schema["paths"].get(info.path, {}).get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            if policy.needs_key(access):
                operation["security"] = [{"bearer": []}]
                responses["401"] = {"description": "No API key, or an unknown one.", **error,
                                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
            if access is Access.ADMIN:
                responses["403"] = {"description": "A key without scope admin, or control disabled "
                                                   "(no key configured).", **error}
