"""What both APIs' routes share: the data plane as a dependency, the metrics' note of which
model a request was for, the Server-Timing header, and one rule for version numbers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.dataplane import DataPlane, Timings
from service.drain import readiness_detail

# Versions are positive integers with at most 9 digits, on both APIs (v2 carries them as strings).
MAX_VERSION = 999_999_999


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
