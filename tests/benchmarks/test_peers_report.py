"""benchmarks/peers/report.py on a results folder laid out as same_run.sh writes it: with
rounds, raw onnxruntime has a figure per round and the raw targets are judged against the
raw figure of the same round (this VM drifts within minutes), as well as the median rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "benchmarks" / "peers" / "report.py"


def _wrk(system: str, c: int, images_per_s: float, p50: float) -> dict[str, object]:
    return {"system": system, "concurrency": c, "images_per_s": images_per_s, "lat_p50_ms": p50,
            "lat_p99_ms": p50 * 2, "wrong_body": 0, "non2xx": 0, "err_connect": 0, "err_read": 0,
            "err_write": 0, "err_timeout": 0, "server_cpu_ms_per_image": 10.0, "mean_batch": 16.0,
            "load_avg_1m": 1.5}


def _raw(b1_p50: float, b16_images: float) -> list[dict[str, object]]:
    return [{"engine": "ort", "batch": 1, "images_per_s": 1000 / b1_p50, "batch_p50_ms": b1_p50, "cpu_ms_per_image": 18.0},
            {"engine": "ort", "batch": 16, "images_per_s": b16_images, "batch_p50_ms": 70.0, "cpu_ms_per_image": 9.0}]


def _write(folder: Path, name: str, data: object) -> None:
    (folder / name).write_text(json.dumps(data))


def _report(res: Path) -> str:
    done = subprocess.run([sys.executable, str(REPORT), str(res)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(60)
def test_raw_targets_are_judged_round_by_round(tmp_path: Path) -> None:
    model = tmp_path / "alexnet"
    model.mkdir()
    _write(tmp_path, "meta.json", {"models": "alexnet", "rounds": 3})
    # The machine slows in round 2: raw and convscope together. Against the median rows
    # (raw 9.0 ms, convscope 12.1 ms) c=1 misses; round by round it is +2.6, +2.8, +3.5 ms.
    for k, (raw_p50, raw16, cs_p50, cs16, peer16) in enumerate(
            [(9.0, 230.0, 11.6, 190.0, 160.0), (10.4, 200.0, 13.2, 170.0, 150.0), (8.6, 220.0, 12.1, 185.0, 165.0)], 1):
        _write(model, f"raw.r{k}.json", _raw(raw_p50, raw16))
        _write(model, f"wrk_convscope_c1.r{k}.json", _wrk("convscope", 1, 1000 / cs_p50, cs_p50))
        _write(model, f"wrk_convscope_c16.r{k}.json", _wrk("convscope", 16, cs16, 80.0))
        _write(model, f"wrk_pytriton_c1.r{k}.json", _wrk("pytriton", 1, 50.0, 20.0))
        _write(model, f"wrk_pytriton_c16.r{k}.json", _wrk("pytriton", 16, peer16, 100.0))
    text = _report(tmp_path)
    assert "median of 3 rounds" in text
    assert "alexnet c=1: convscope p50 12.1 ms vs raw batch-1 p50 9.0 + 3 ms = 12.0 ms: MISS" in text
    assert ("alexnet c=1, round by round: convscope p50 minus raw batch-1 p50 of the same round: median +2.80 ms "
            "(per round: +2.60, +2.80, +3.50); target <= +3 ms: PASS") in text
    assert ("alexnet c=16, round by round against raw onnxruntime's best batch of the same round: median 0.84 "
            "(per round: 0.83, 0.85, 0.84); target >= 0.8: PASS") in text
    assert "convscope / pytriton median 1.13x over 3 rounds" in text


@pytest.mark.timeout(60)
def test_one_raw_figure_before_the_systems_without_rounds(tmp_path: Path) -> None:
    model = tmp_path / "alexnet"
    model.mkdir()
    _write(tmp_path, "meta.json", {"models": "alexnet", "rounds": 1})
    _write(model, "raw.json", _raw(9.0, 230.0))
    _write(model, "wrk_convscope_c1.json", _wrk("convscope", 1, 90.0, 11.0))
    _write(model, "wrk_convscope_c16.json", _wrk("convscope", 16, 190.0, 80.0))
    text = _report(tmp_path)
    assert "alexnet c=1: convscope p50 11.0 ms vs raw batch-1 p50 9.0 + 3 ms = 12.0 ms: PASS" in text
    assert "alexnet c=16: 0.83 of raw onnxruntime's best batch (230.0 img/s, batch 16); target >= 0.8: PASS" in text
    assert "round by round" not in text and "median of" not in text
