"""JSON bodies: their structure bounded before they are parsed, then parsed.

Parsing builds a Python object for every value and holds the GIL while it does, whichever
thread runs it: 8 MB of ``[[],[],...]`` is 2.7 million lists and seconds during which no
other request moves. What a valid request can hold is known beforehand (so many images,
a tensor of so many values, a few names and parameters), so a scan of the bytes, a few
passes of C over them with the GIL free between passes, refuses what cannot be one: too
many strings, values or containers, or containers nested too deep. Only then is the body
parsed, with orjson (about 5x the standard library's speed on numbers), and with the
standard library where orjson refuses (it has no ``NaN``, which some clients write and the
codecs refuse with their own message). Every failure is a BadRequest (400: a body holding
more than a valid request can is malformed, however few bytes it has) that says what was
wrong: a number too long for Python's int (a plain ValueError from the parser) included. A pure function of the bytes,
shared by both APIs' codecs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import BadRequest

_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets
DEPTH_PREFIX = 1024 * 1024


@dataclass(frozen=True)
class JsonBounds:
    """The most a valid request's JSON can hold."""

    strings: int  # strings, object keys included
    items: int  # values in arrays plus members of objects (about one per comma)
    containers: int  # arrays and objects
    depth: int  # containers nested in one another


@dataclass(frozen=True)
class JsonShape:
    """What the scan counted (an upper bound of each: a string's escaped quotes count)."""

    strings: int
    items: int
    containers: int
    depth: int


def scan(body: bytes, bounds: JsonBounds, what: str) -> JsonShape:
    """Count the structure of ``body`` and refuse it when it passes ``bounds``; ``what``
    names the body in the messages ("the inference request")."""
    strings = body.count(b'"') // 2
    if strings > bounds.strings:
        raise BadRequest(f"{what} holds about {strings} JSON strings; a valid one holds at most {bounds.strings}")
    outside = _outside_strings(body)
    containers = outside.count(b"[") + outside.count(b"{")
    depth = containers
    if containers > bounds.depth:  # else it cannot nest deeper than allowed
        # Past the container bound, the first MiB is enough to tell deep from merely many.
        region = outside if containers <= bounds.containers else outside[:DEPTH_PREFIX]
        depth = _depth(region.translate(None, _BRACKETS))
        if depth > bounds.depth:
            raise BadRequest(f"{what} nests JSON too deeply (over {bounds.depth} levels)")
    if containers > bounds.containers:
        raise BadRequest(
            f"{what} holds {containers} JSON arrays and objects; a valid one holds at most {bounds.containers}"
        )
    items = outside.count(b",") + 1
    if items > bounds.items:
        raise BadRequest(f"{what} holds about {items} JSON values; a valid one holds at most {bounds.items}")
    return JsonShape(strings, items, containers, depth)


def loads(body: bytes, bounds: JsonBounds, what: str, hint: str = "") -> Any:
    """``body`` parsed, after ``scan``; ``hint`` is added to a parse error's message."""
    scan(body, bounds, what)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # NaN and Infinity, which orjson refuses and the codecs answer for themselves
        return json.loads(body)
    except RecursionError:
        raise BadRequest(f"{what} nests JSON too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of over 4300 digits
        raise BadRequest(f"{what} is not valid JSON: {_short(str(exc))}{hint}") from None


def _outside_strings(body: bytes) -> bytes:
    """``body`` with every string's contents left out (its opening quote stays): brackets
    and commas inside strings are not structure. One C ``find`` per quote; the quotes were
    counted (and bounded) first."""
    parts = []
    position = 0
    while True:
        start = body.find(b'"', position)
        if start < 0:
            parts.append(body[position:])
            return b"".join(parts)
        parts.append(body[position:start + 1])
        end = start
        while True:
            end = body.find(b'"', end + 1)
            if end < 0:  # unterminated: the parser will say so
                return b"".join(parts)
            backslashes = 0
            while body[end - 1 - backslashes] == 0x5C:  # \
                backslashes += 1
            if backslashes % 2 == 0:
                break
        position = end + 1


def _depth(brackets: bytes) -> int:
    """The deepest nesting of a sequence of brackets."""
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:200] + "..."
