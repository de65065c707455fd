"""Versioning and atomic writes of a new version (model_export.staging)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import artifact
from model_export import staging as artifact_dir
from model_export.errors import ExportError
from tests.support.export_cli import run_cli, tree


def _version(model_dir: Path, v: int, complete: bool = True) -> None:
    (model_dir / str(v)).mkdir(parents=True)
    if complete:
        (model_dir / str(v) / "metadata.json").write_text("{}")


def test_next_version_skips_every_integer_entry(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    assert artifact_dir.choose_version(model_dir, None) == 1
    _version(model_dir, 1)
    _version(model_dir, 3, complete=False)  # incomplete, but its number is taken
    (model_dir / "latest").mkdir()
    (model_dir / ".tmp-abc").mkdir()
    assert artifact_dir.versions(model_dir) == [1, 3]
    assert artifact_dir.complete_versions(model_dir) == [1]
    assert artifact_dir.choose_version(model_dir, None) == 4
    assert artifact_dir.choose_version(model_dir, 2) == 2
    with pytest.raises(ExportError, match="refusing to overwrite"):
        artifact_dir.choose_version(model_dir, 1)
    with pytest.raises(ExportError, match="positive"):
        artifact_dir.choose_version(model_dir, 0)


@pytest.mark.parametrize("name", ["Digits", "-x", "a/b", "", "a b"])
def test_names_follow_the_contract(name: str) -> None:
    with pytest.raises(ExportError, match="invalid model name"):
        artifact_dir.check_name(name)
    assert artifact_dir.check_name("fashion-mnist-alexnet_2.0") == "fashion-mnist-alexnet_2.0"


def _metadata(version: int, files: dict[str, artifact.FileRecord]) -> artifact.Metadata:
    recipe = artifact.InputRecipe(name="input", shape=[-1, 1, 4, 4], channels=1, size=(4, 4), scale=1.0,
                                  mean=[0.0], std=[1.0])
    return artifact.Metadata(schema_version=1, version=version, labels=["a"], input=recipe,
                             output=artifact.ClassOutput(name="logits"), layers=[], files=files)


def test_commit_writes_metadata_last_and_renames(tmp_path: Path) -> None:
    with artifact_dir.Staging(tmp_path, "m", None) as staging:
        assert staging.path is not None and staging.path.name.startswith(".tmp-")
        assert staging.path.parent == tmp_path / "m"
        (staging.path / "model.onnx").write_bytes(b"onnx")
        final = staging.commit(_metadata)
    assert final == tmp_path / "m" / "1"
    assert tree(tmp_path / "m") == ["1", "1/metadata.json", "1/model.onnx"]
    meta = json.loads((final / "metadata.json").read_text())
    assert meta["version"] == 1
    assert meta["files"] == {"model.onnx": {"sha256": artifact.sha256(final / "model.onnx"), "bytes": 4}}


def test_a_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "models"
    with pytest.raises(RuntimeError):
        with artifact_dir.Staging(out, "m", None) as staging:
            assert staging.path is not None
            (staging.path / "model.onnx").write_bytes(b"half")
            raise RuntimeError("crash mid-export")
    assert not out.exists()  # created by this run, so removed again
    _version(out / "m", 1)
    with pytest.raises(RuntimeError):
        with artifact_dir.Staging(out, "m", None):
            raise RuntimeError("crash")
    assert tree(out) == ["m", "m/1", "m/1/metadata.json"]


def test_a_failing_export_leaves_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash the real pipeline after model.onnx is written: no version, no temp dir."""
    import model_export.parity as parity

    def boom(*args: object, **kwargs: object) -> None:
        raise ExportError("simulated failure after writing model.onnx")

    monkeypatch.setattr(parity, "check_dynamic_batch", boom)
    out = tmp_path / "models"
    result = run_cli(["--out", out, "--epochs", "0", "--quiet"])
    assert result.rc == 2 and result.stderr == "error: simulated failure after writing model.onnx\n"
    assert tree(out) == []


def test_versions_increment_and_forced_version_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "models"
    base = ["--out", out, "--epochs", "0", "--quiet", "--name", "v"]
    first = run_cli(base)
    second = run_cli(base)
    assert (first.rc, second.rc) == (0, 0)
    assert (first.written.name, second.written.name) == ("1", "2")
    forced = run_cli([*base, "--version", "7"])
    assert forced.rc == 0 and forced.written.name == "7"
    again = run_cli([*base, "--version", "7"])
    assert again.rc == 2 and "refusing to overwrite" in again.stderr
    assert sorted(p.name for p in (out / "v").iterdir()) == ["1", "2", "7"]
    # --if-missing: a complete version exists, so nothing is trained or written.
    skipped = run_cli([*base, "--if-missing"])
    assert skipped.rc == 0 and skipped.stdout == ""
    assert sorted(p.name for p in (out / "v").iterdir()) == ["1", "2", "7"]
