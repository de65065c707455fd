"""benchmarks/gpu_check.sh runs end to end where no GPU is (``--provider cpu``), so the
script a GPU session will run once cannot rot: export, service start, provider check,
output comparison, raw and served speed, the markdown it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS-gpu-cpu.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env["PYTHON"] = sys.executable
    env["GPU_CHECK_NO_INSTALL"] = "1"  # never apt-get from a test
    # TinyVGG exported untrained: the export path of the script, in seconds rather than
    # AlexNet's minutes; every other step is the same.
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--provider", "cpu", "--arch", "tinyvgg",
         "--repository", str(tmp_path / "models"), "--duration", "1", "--concurrency", "1,4",
         "--batches", "1,4", "--loadgen", "httpx", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "- /v1/models: `CPUExecutionProvider`" in text
    assert text.count("| PASS |") == 2  # the logits and one feature map agree with the CPU
    assert "| service | c=4 |" in text and "| raw onnxruntime | batch 4 |" in text
    assert (tmp_path / "models" / "gpu-check-tinyvgg").is_dir()


def test_gpu_check_refuses_a_provider_this_build_lacks(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--provider", "cuda", "--model-dir", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "has no CUDAExecutionProvider" in done.stderr and "--provider cpu" in done.stderr
