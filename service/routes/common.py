"""What both APIs' routes share: the data plane as a dependency, the metrics' note of which
model a request was for, the Server-Timing header, and one rule for version numbers."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Request

from service.codecs.oip import VERSION_PATTERN
from service.http.drain import readiness_detail
from service.inference.dataplane import DataPlane, Timings

# Versions are positive integers with at most 9 digits, on both APIs (v2 carries them as strings).
MAX_VERSION = 999_999_999


def ascii_version(value: object) -> object:
    """v1's half of the one rule (v2's is inference_protocol.parse_version): 1 to 9 ASCII
    digits, as text, before pydantic's int parsing, which would take "1.0", " 1", "+1" or
    "1_0" (as 10)."""
    if isinstance(value, str) and not _VERSION_TEXT.fullmatch(value):
        raise ValueError("versions are positive integers (1 to 999999999), written in ASCII digits")
    return value


_VERSION_TEXT = re.compile(VERSION_PATTERN)


def get_dataplane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


Plane = Annotated[DataPlane, Depends(get_dataplane)]


def server_timing(timings: Timings) -> str:
    return ", ".join(f"{k};dur={v}" for k, v in timings.as_ms().items())


def note_model(request: Request, name: str | None, version: int | None) -> None:
    """Tell the metrics middleware which model this request was for."""
    request.state.model = name
    request.state.version = version


def readiness(request: Request) -> tuple[bool, str]:
    """Ready to take traffic: not draining, and the registry has a model ready."""
    draining = readiness_detail(request.app.state.drain)
    if draining is not None:
        return False, draining
    plane: DataPlane = request.app.state.dataplane
    return plane.registry.readiness()
