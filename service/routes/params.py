"""The path and query parameters the routes share, each declared once: a model is named,
and a version numbered, the same way on every route."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator

from service.codecs.oip import VERSION_PATTERN
from service.models.repository import NAME_PATTERN

# Versions are positive integers with at most 9 digits, on both APIs (v2 carries them as strings).
MAX_VERSION = 999_999_999
# The tables index channels, ranks and pictures as int32 (docs/artifact.md).
MAX_INDEX = 2**31 - 1
# A training export stores at most 60 samples (docs/artifact.md, samples.npz).
MAX_SAMPLES = 60

_VERSION_TEXT = re.compile(VERSION_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,10}")


def ascii_version(value: object) -> object:
    """v1's half of the one rule (v2's is codecs.oip.parse_version): 1 to 9 ASCII digits, as
    text, before pydantic's int parsing, which would take "1.0", " 1", "+1" or "1_0" (as 10)."""
    if isinstance(value, str) and not _VERSION_TEXT.fullmatch(value):
        raise ValueError("versions are positive integers (1 to 999999999), written in ASCII digits")
    return value


def ascii_index(value: object) -> object:
    """Indexes in the path are plain ASCII digits: pydantic alone would also take " 1",
    "+1" or "1_0" (as 10), which the OpenAPI document does not allow."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("indexes are non-negative integers written in ASCII digits")
    return value


ModelName = Annotated[str, Path(pattern=NAME_PATTERN.pattern, max_length=255,
                                description="Model name (a directory of the model repository).")]
Version = Annotated[int, Path(ge=1, le=MAX_VERSION, description="Model version (an integer directory)."),
                    BeforeValidator(ascii_version)]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_VERSION, description=(
    "Model version (default: newest ready). An alias kept for older clients: the same operation is also "
    "under /v1/models/{name}/versions/{version}/..."), deprecated=True), BeforeValidator(ascii_version)]
# What codecs.oip.parse_version accepts (1 to 9 digits, not all zeros), declared for clients;
# it enforces it with the protocol's 400.
ProtocolVersion = Annotated[str, Path(json_schema_extra={"pattern": "^0*[1-9][0-9]*$", "maxLength": 9},
                                      description="Model version: a positive integer, as a string.")]
LayerName = Annotated[str, Path(description="Layer name as listed by GET /v1/models/{name}/layers.")]
Channel = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Channel index, 0 .. the layer's channels - 1 "
                                                              "(output_shape[1] in GET /v1/models/{name}/layers)."),
                    BeforeValidator(ascii_index)]
Rank = Annotated[int, Path(ge=0, le=MAX_INDEX, description="Rank among the channel's top images, 0 (strongest) "
                                                           ".. top_k - 1 (metadata `channel_view.top_k`)."),
                 BeforeValidator(ascii_index)]
SampleId = Annotated[int, Path(ge=0, le=MAX_SAMPLES - 1, description="Sample id, as listed by GET .../samples."),
                     BeforeValidator(ascii_index)]
