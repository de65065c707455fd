"""Request metrics' labels come from a bounded set, whatever the URL said."""

from __future__ import annotations

import pytest

from service.metrics import model_labels

SERVED = {"digits": {1: object(), 2: object()}}


@pytest.mark.parametrize("name, version, labels", [
    ("digits", 2, ("digits", "2")),
    ("digits", None, ("digits", "")),
    ("digits", 7, ("digits", "unknown")),
    ("digits", "2", ("digits", "unknown")),  # only a version the registry resolved is an int
    ("x1y", 2, ("unknown", "unknown")),
    ("x1y", None, ("unknown", "")),
    (None, None, ("", "")),
])
def test_model_labels(name: object, version: object, labels: tuple[str, str]) -> None:
    assert model_labels(SERVED, name, version) == labels
