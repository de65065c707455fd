"""Shared fixtures for the whole test suite.

`digits_artifact` is the one real model every stage can test against: tinyvgg trained
on scikit-learn's digits and exported through the real CLI entry point, once per session.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.exported import ExportedModel


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    """tinyvgg trained on digits (seed 0, default epochs: >= 95% held-out), exported.

    Without the export's measurement of explanations (--explain-images 0): the tests that
    serve it rely on today's default method (occlusion), which a timed measurement could
    change from run to run; tests/model_export/test_export_any_folder.py tests the measurement."""
    from model_export.cli import main
    from model_export.datasets import load_digits

    repository = tmp_path_factory.mktemp("models")
    name = "digits-tinyvgg"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["--out", str(repository), "--name", name, "--seed", "0", "--quiet", "--explain-images", "0"])
    assert rc == 0, "exporting the digits model failed"
    path = Path(stdout.getvalue().strip().splitlines()[-1])
    metadata = json.loads((path / "metadata.json").read_text())
    held_out = load_digits(seed=0).val  # the split the CLI held out with --seed 0
    return ExportedModel(
        repository=repository,
        name=name,
        version=int(path.name),
        path=path,
        metadata=metadata,
        images=np.asarray(held_out.images),
        labels=held_out.labels,
        classes=list(metadata["labels"]),
    )
