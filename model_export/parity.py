"""ONNX Runtime vs PyTorch eager on the same images, for every graph output.

Criterion: max |ort - torch| <= tolerance * max(1, max |torch|), per output. float32
kernels that sum in a different order (oneDNN vs MLAS, fused Conv+ReLU) differ by a few
ulps of the running sums, i.e. ~1e-6 relative to the values' magnitude; a wrong graph
(missing layer, swapped weights, bad preprocessing constant) is off by O(1) relative.
An absolute floor of `tolerance` covers small-valued outputs (a ReLU map of ~0.01),
and the relative part covers large ones (untrained ImageNet logits in the hundreds),
so the default 1e-3 sits three decades above float noise and three below any real bug.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from artifact import Parity

from .errors import ExportError

DEFAULT_TOLERANCE = 1e-3
CRITERION = "max_abs_diff <= tolerance * max(1, max_abs_reference)"


def session(path: str | os.PathLike[str] | bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Failures come back as exceptions that the CLI reports in one line; onnxruntime's
    # own log lines on stderr would only repeat them.
    options.log_severity_level = 4
    # One thread: parity runs a few dozen images, and spinning worker threads slow a
    # busy 2-core machine far more than they help.
    options.intra_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_onnx(
    path: str | os.PathLike[str], batch: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    names = list(names) if names is not None else [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {input_name: batch}, _quiet()), strict=False))


def _quiet() -> Any:
    import onnxruntime as ort

    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    return run_options


def compare(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    tolerance: float,
    images: int,
    against: str = "PyTorch",
) -> Parity:
    """Parity record for metadata; raises ExportError when any output is off."""
    diffs: dict[str, float] = {}
    failed: list[str] = []
    for name, ref in reference.items():
        got = candidate[name]
        if got.shape != ref.shape:
            raise ExportError(f"parity: output {name} has shape {got.shape}, expected {ref.shape}")
        diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if ref.size else 0.0
        diffs[name] = diff
        scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 0.0)
        if not diff <= tolerance * scale:  # also catches NaN
            failed.append(f"{name} (max abs diff {diff:.3g} > {tolerance * scale:.3g})")
    if failed:
        raise ExportError(f"parity check failed against {against}: {', '.join(failed)}")
    return Parity(images=images, tolerance=tolerance, criterion=CRITERION, passed=True, max_abs_diff=diffs)


def check_dynamic_batch(
    path: str | os.PathLike[str], sample: np.ndarray, sizes: Sequence[int] = (1, 7)
) -> None:
    """Run batches of different sizes; every output must follow the batch size."""
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    for n in sizes:
        batch = np.resize(sample, (n, *sample.shape[1:])).astype(np.float32)
        try:
            outputs = sess.run(None, {input_name: batch}, _quiet())
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise ExportError(f"the model does not run with a batch of {n}: {exc}") from exc
        for meta, out in zip(sess.get_outputs(), outputs, strict=False):
            if out.shape[0] != n:
                raise ExportError(f"output {meta.name} has batch {out.shape[0]} for an input batch of {n}")
