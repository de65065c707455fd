"""benchmarks/int8_providers.py on the CPU, on a small synthetic net and its int8 version
(tests/support/artifacts.py): the same script reports the CUDA provider on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import int8_providers
from tests.support.artifacts import write_artifact, write_int8


def test_it_reports_both_versions_nodes_and_timings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1, views=True)
    write_int8(root)
    out = tmp_path / "providers.md"
    assert int8_providers.main([str(root / "synthetic"), "--runs", "2", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 16", "| 64"]
    # The CPU provider fuses the int8 graph's QDQ chains into integer kernels; the float
    # graph has none of them.
    (float_nodes,) = [line for line in text.splitlines() if line.startswith("- float32, CPUExecutionProvider")]
    (int8_nodes,) = [line for line in text.splitlines() if line.startswith("- int8, CPUExecutionProvider")]
    assert "QLinearConv" in int8_nodes and "QLinear" not in float_nodes and "Conv" in float_nodes


def test_a_folder_with_no_int8_version_says_how_to_make_one(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_artifact(root, "synthetic", 1)
    with pytest.raises(SystemExit, match="model_export quantize"):
        int8_providers.main([str(root / "synthetic")])


def test_a_provider_this_build_lacks_is_exit_status_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert int8_providers.main([str(tmp_path), "--provider", "cuda"]) == 2
