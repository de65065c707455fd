"""The JSON bounding scan on its own: what it counts, what it refuses, and the parse after it."""

from __future__ import annotations

import pytest

from service.errors import BadRequest
from service.http.json_bounds import JsonBounds, JsonShape, loads, scan

ROOMY = JsonBounds(strings=100, items=100, containers=100, depth=10)


def test_structure_inside_strings_is_not_counted() -> None:
    body = b'{"a": "[[[{,,,\\"]]", "b": [1, 2, {"c": "\\\\"}], "d": "\\\\\\""}'
    assert scan(body, ROOMY, "x") == JsonShape(strings=8, items=5, containers=3, depth=3)
    assert loads(body, ROOMY, "x") == {"a": '[[[{,,,"]]', "b": [1, 2, {"c": "\\"}], "d": '\\"'}


@pytest.mark.parametrize("body, error, words", [
    (b'["a", "b", "c"]', BadRequest, "holds about 3 JSON strings; a valid one holds at most 2"),
    (b"[[], [], []]", BadRequest, "holds 4 JSON arrays and objects; a valid one holds at most 3"),
    (b"[1, 2, 3, 4]", BadRequest, "holds about 4 JSON values; a valid one holds at most 3"),
    (b"[[[[1]]]]", BadRequest, "nests JSON too deeply (over 3 levels)"),
    (b"[" * 100_000 + b"]" * 100_000, BadRequest, "too deeply"),  # past the container bound too
])
def test_each_bound_refuses_with_its_reason(body: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as caught:
        scan(body, JsonBounds(strings=2, items=3, containers=3, depth=3), "the body")
    assert words in str(caught.value)


@pytest.mark.parametrize("body, words", [
    (b'{"image": ' + b"1" * 5000 + b"}", "not valid JSON: Exceeds the limit (4300 digits)"),
    (b'{"image": ', "not valid JSON"),
    (b'"\xff"', "not valid JSON"),
])
def test_what_cannot_be_parsed_is_a_400(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words.replace("(", r"\(").replace(")", r"\)")):
        loads(body, ROOMY, "the body")


def test_nan_is_parsed_for_the_codecs_to_refuse() -> None:
    assert str(loads(b"[NaN, 1.5]", ROOMY, "x")) == "[nan, 1.5]"
