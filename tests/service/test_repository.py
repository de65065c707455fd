from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.repository import ArtifactError, load_artifact, scan
from tests.service.synthetic import write_artifact


def test_scan_finds_integer_versions_and_skips_the_rest(tmp_path: Path) -> None:
    write_artifact(tmp_path, "a", 1)
    write_artifact(tmp_path, "a", 10)
    write_artifact(tmp_path, "b", 2)
    (tmp_path / "a" / ".tmp-123").mkdir()  # an export in progress
    (tmp_path / "a" / "latest").mkdir()
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    (tmp_path / "README.txt").write_text("not a model")
    assert [(r.name, r.version) for r in scan(tmp_path)] == [("a", 1), ("a", 10), ("b", 2)]


def test_missing_repository_is_empty(tmp_path: Path) -> None:
    assert scan(tmp_path / "nope") == []


def test_valid_artifact_loads(tmp_path: Path) -> None:
    write_artifact(tmp_path, "m", 1)
    artifact = load_artifact(scan(tmp_path)[0])
    assert artifact.model_path.name == "model.onnx"
    assert artifact.initial_weights_path is not None


def break_metadata(directory: Path, **changes: object) -> None:
    path = directory / "metadata.json"
    metadata = json.loads(path.read_text())
    for dotted, value in changes.items():
        target = metadata
        *parents, leaf = dotted.split("__")
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("changes, reason", [
    ({"schema_version": 99}, "schema_version"),
    ({"labels": []}, "labels"),
    ({"input__channels": 2}, "channels"),
    ({"input__mean": [0.1, 0.2]}, "mean"),
    ({"input__std": [0.0]}, "std"),
    ({"input__size": [8]}, "size"),
    ({"input__scale": None}, "input lacks scale"),
    ({"output": {}}, "output.name"),
    ({"layers": [{"name": "x"}]}, "output_shape"),
    ({"files": {}}, "files"),
])
def test_invalid_metadata_is_refused_with_a_reason(tmp_path: Path, changes: dict, reason: str) -> None:
    directory = write_artifact(tmp_path, "m", 1)
    break_metadata(directory, **changes)
    with pytest.raises(ArtifactError, match=reason):
        load_artifact(scan(tmp_path)[0])


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path, "m", 1)
    with (directory / "model.onnx").open("ab") as f:
        f.write(b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(scan(tmp_path)[0])


def test_missing_file_and_missing_metadata(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path, "m", 1)
    (directory / "initial_weights.npz").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(scan(tmp_path)[0])
    (directory / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match="metadata.json is missing"):
        load_artifact(scan(tmp_path)[0])


def test_invalid_json(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path, "m", 1)
    (directory / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(scan(tmp_path)[0])
