"""The limit: onnxruntime in-process, exactly as the service runs predictions.

The model is opened with ``service.models.runtime.load_model`` and the service's own settings
(``CONVSCOPE_INTRA_OP_THREADS``, ``CONVSCOPE_INTER_OP_THREADS``, ``CONVSCOPE_PROVIDERS``
from the environment), and timed through ``ModelRuntime.run`` asking for the class output
alone, i.e. the pruned, logits-only session the service's prediction path uses. The input
is the benchmark image, preprocessed by the service's own code, repeated to the batch.

``python -m benchmarks.raw MODEL_DIR --batches 1,8,32 -d 5`` prints JSON; ``run.py`` calls
it in a subprocess so its sessions and thread pools are gone before the server starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def measure(model_dir: Path, body: Path, batches: list[int], seconds: float, warmup: float) -> dict[str, object]:
    from service.inference.preprocessing import decode, preprocess
    from service.models.repository import load_artifact, scan
    from service.models.runtime import load_model
    from service.options import ServiceOptions
    from service.settings import Settings

    options = ServiceOptions.from_settings(Settings())  # exactly the service's sessions and recipe
    refs = scan(model_dir.parent)
    ref = max((r for r in refs if r.name == model_dir.name), key=lambda r: r.version)
    model = load_model(load_artifact(ref), options.runtime, reducing_gap=options.preparation.reducing_gap)
    image = preprocess(decode(body.read_bytes(), max_pixels=options.preparation.max_pixels, spec=model.spec),
                       model.spec)
    outputs = (model.output_name,)
    results = []
    for batch_size in batches:
        batch = np.ascontiguousarray(np.repeat(image[None], batch_size, axis=0))
        deadline = time.perf_counter() + warmup
        model.run(batch, outputs)
        while time.perf_counter() < deadline:
            model.run(batch, outputs)
        times: list[float] = []
        cpu0 = time.process_time()
        began = time.perf_counter()
        stop = began + seconds
        while True:
            t0 = time.perf_counter()
            model.run(batch, outputs)
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 >= stop and len(times) >= 5:
                break
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu0
        times.sort()
        results.append({
            "batch": batch_size,
            "runs": len(times),
            "images_per_s": batch_size * len(times) / wall,
            "p50_ms": statistics.median(times) * 1000.0,
            "min_ms": times[0] * 1000.0,
            # CPU the process used (all onnxruntime threads, spin-waiting included): on a
            # busy machine a steadier figure than wall-clock speed.
            "cpu_cores": cpu / wall,
            "cpu_ms_per_image": 1000.0 * cpu / (batch_size * len(times)),
        })
    return {
        "model": model.artifact.name,
        "version": model.artifact.version,
        "provider": model.provider,
        "intra_op_threads": options.runtime.intra_op_threads,
        "inter_op_threads": options.runtime.inter_op_threads,
        "input_shape": list(model.spec.shape),
        "batches": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="repository/<name> (the newest version is used)")
    parser.add_argument("--body", type=Path, required=True, help="the encoded image to preprocess")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per batch size")
    parser.add_argument("-w", "--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    json.dump(measure(args.model_dir, args.body, batches, args.duration, args.warmup), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
