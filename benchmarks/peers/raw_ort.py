#!/usr/bin/env python3
"""In-process onnxruntime throughput of the bare model: the ceiling a server can approach.

  PEER_SPEC=spec.json raw_ort.py --onnx model.onnx --batches "1 16" --duration 10 --json raw.json

No HTTP, no image decoding: a random float32 tensor of the model's input shape (from the
spec) goes straight into InferenceSession.run, back to back, with the session every peer
opens (common/ortpeer.py: onnxruntime's defaults unless ORT_THREADS / ORT_ALLOW_SPINNING).

Prints and writes a JSON list, one entry per batch size:
  {"engine": "ort", "batch": B, "images_per_s": ..., "batch_p50_ms": ..., "cpu_ms_per_image": ...}
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "common"))
from ortpeer import CHANNELS, HEIGHT, WIDTH, load_session  # noqa: E402


def pct(sorted_vals, p):
    k = (len(sorted_vals) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def timed_loop(fn, duration, warmup_s, min_iters=3):
    """Run fn() for warmup_s (at least once), then for `duration` seconds: (wall, cpu, latencies)."""
    t_end = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < t_end:
        fn()
    lat = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    stop = t0 + duration
    while True:
        s = time.perf_counter()
        fn()
        e = time.perf_counter()
        lat.append(e - s)
        if e >= stop and len(lat) >= min_iters:
            break
    return e - t0, time.process_time() - c0, lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batches", default="1 16")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--json", help="write results here")
    args = ap.parse_args()
    import onnxruntime as ort

    sess, name = load_session(args.onnx)
    rng = np.random.default_rng(0)
    results = []
    for b in (int(v) for v in args.batches.replace(",", " ").split()):
        x = rng.standard_normal((b, CHANNELS, HEIGHT, WIDTH), dtype=np.float32)
        elapsed, cpu, lat = timed_loop(lambda x=x: sess.run(None, {name: x}), args.duration, args.warmup)
        lat_ms = sorted(v * 1000 for v in lat)
        r = {
            "engine": "ort", "batch": b, "iters": len(lat), "elapsed_s": round(elapsed, 3),
            "images_per_s": round(len(lat) * b / elapsed, 2),
            "batch_p50_ms": round(pct(lat_ms, 50), 3), "batch_p95_ms": round(pct(lat_ms, 95), 3),
            "cpu_ms_per_image": round(cpu * 1000 / (len(lat) * b), 3),
            "ort_version": ort.__version__,
            "intra_op_threads": os.environ.get("ORT_THREADS") or "default",
        }
        results.append(r)
        print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
