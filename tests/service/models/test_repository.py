from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from artifact import ArtifactError
from service.models.repository import Layout, detect_layout, load_artifact, scan
from tests.support.artifacts import write_artifact


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
    ({"input__scale": None}, "input.scale is missing"),
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


# -- the layouts KServe's storage initializer produces in /mnt/models --------------------------


def lone_version(tmp_path: Path, name: str = "digits", version: int = 3, mount: str = "models") -> Path:
    """One version's directory as the root: metadata.json and model.onnx directly in it."""
    source = write_artifact(tmp_path / "export", name, version)
    root = tmp_path / "mnt" / mount
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, root)
    return root


def model_directory(tmp_path: Path, name: str = "digits", versions: tuple[int, ...] = (1, 2),
                    mount: str = "models") -> Path:
    """One model's directory as the root: its version directories directly in it."""
    for version in versions:
        write_artifact(tmp_path / "export", name, version)
    root = tmp_path / "mnt" / mount
    root.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp_path / "export" / name, root)
    return root


def found(root: Path, model_name: str | None = None) -> list[tuple[str, int, Path]]:
    return [(r.name, r.version, r.path) for r in scan(root, model_name)]


def test_a_lone_version_directory_is_one_model_named_by_its_metadata(tmp_path: Path) -> None:
    root = lone_version(tmp_path)
    assert detect_layout(root) is Layout.ARTIFACT
    assert found(root) == [("digits", 3, root)]
    artifact = load_artifact(scan(root)[0])
    assert artifact.model_path == root / "model.onnx"


def test_the_model_name_setting_names_a_single_model(tmp_path: Path) -> None:
    lone = lone_version(tmp_path / "a")
    assert found(lone, "my-isvc") == [("my-isvc", 3, lone)]
    versions = model_directory(tmp_path / "b")
    assert found(versions, "my-isvc") == [("my-isvc", 1, versions / "1"), ("my-isvc", 2, versions / "2")]


def test_a_directory_of_versions_is_one_model(tmp_path: Path) -> None:
    root = model_directory(tmp_path, versions=(2, 10))
    (root / ".tmp-123").mkdir()  # an export in progress
    (root / "latest").mkdir()
    (root / "0").mkdir()
    (root / "3").mkdir()  # incomplete: listed, and its load says why
    assert detect_layout(root) is Layout.MODEL
    assert found(root) == [("digits", 2, root / "2"), ("digits", 3, root / "3"), ("digits", 10, root / "10")]
    with pytest.raises(ArtifactError, match="metadata.json is missing"):
        load_artifact(scan(root)[1])
    assert load_artifact(scan(root)[2]).version == 10


def test_a_single_model_is_named_by_its_newest_readable_metadata(tmp_path: Path) -> None:
    root = model_directory(tmp_path, versions=(1, 2, 3))
    break_metadata(root / "2", name="renamed")
    (root / "3" / "metadata.json").write_text("{not json")
    assert {r.name for r in scan(root)} == {"renamed"}


def test_a_single_model_without_a_usable_name_takes_its_directory_name(tmp_path: Path) -> None:
    named = lone_version(tmp_path / "a", mount="fashion")
    break_metadata(named, name="not a valid name!", version=None)
    assert found(named) == [("fashion", 1, named)]  # and version 1 when the metadata has none
    unnamed = lone_version(tmp_path / "b", mount="_mount")
    (unnamed / "metadata.json").write_text("[]")
    assert found(unnamed) == [("model", 1, unnamed)]
    with pytest.raises(ArtifactError, match="JSON object"):
        load_artifact(scan(unnamed)[0])


def test_a_model_named_like_a_version_keeps_the_repository_layout(tmp_path: Path) -> None:
    write_artifact(tmp_path, "7", 1)
    assert detect_layout(tmp_path) is Layout.REPOSITORY
    assert found(tmp_path) == [("7", 1, tmp_path / "7" / "1")]


def test_a_repository_keeps_its_names_whatever_the_model_name(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    write_artifact(tmp_path, "a", 1)
    write_artifact(tmp_path, "b", 1)
    with caplog.at_level(logging.WARNING, logger="convscope.repository"):
        assert [r.name for r in scan(tmp_path, "my-isvc")] == ["a", "b"]
    assert "'my-isvc' applies to a single model" in caplog.text and "a, b" in caplog.text


def test_an_onnx_file_alone_is_no_model_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with caplog.at_level(logging.WARNING, logger="convscope.repository"):
        assert scan(tmp_path) == []
    assert "no metadata.json" in caplog.text
