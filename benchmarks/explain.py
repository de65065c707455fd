"""Explanations, per method: forward passes, latency, and (on digits) how often the map beats chance.

The engine is called with onnxruntime as its forward, in-process and with no batcher:
``ModelRuntime.run`` (the service's own sessions: logits-only for the perturbation passes,
the features session for the one pass that fetches a layer), so the figures are the
engine's cost on this machine, not the HTTP path's.

    python -m benchmarks.explain                       # tinyvgg (30 held-out digits) + AlexNet 224
    python -m benchmarks.explain --models tinyvgg --images 10 --batch-size 32

Models are exported into ``benchmarks/out/models`` when missing (as ``benchmarks.run`` does).
AlexNet is untrained (``--epochs 0``): its latency is real, its faithfulness is not
meaningful, so it is explained on two sample photos only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import BENCHES, ROOT, export_if_missing, machine_info


def images_for(bench_key: str, count: int, spec: Any) -> list[np.ndarray]:
    from PIL import Image

    from service.inference.preprocessing import preprocess

    if bench_key == "tinyvgg":
        from model_export.datasets import load_digits

        held_out = load_digits(seed=0).val  # the split the export held out (seed 0)
        pictures = [Image.fromarray(img) for img in np.asarray(held_out.images)[:count]]
    else:
        from sklearn.datasets import load_sample_images

        pictures = [Image.fromarray(img) for img in load_sample_images().images][:count]
    return [preprocess(picture, spec)[None] for picture in pictures]


def measure(bench_key: str, repository: Path, methods: Sequence[str], count: int, batch_size: int,
            batch_seconds: float | None) -> list[dict[str, Any]]:
    from service.explain import Explainer, ExplainRequest, describe
    from service.models.repository import load_artifact, scan
    from service.models.runtime import RuntimeOptions, choose_providers, load_model
    from service.settings import Settings

    bench = BENCHES[bench_key]
    settings = Settings()
    ref = max((r for r in scan(repository) if r.name == bench.name), key=lambda r: r.version)
    artifact = load_artifact(ref)
    runtime = load_model(artifact, RuntimeOptions(providers=choose_providers(settings.providers),
                                                  intra_op_threads=settings.intra_op_threads,
                                                  inter_op_threads=settings.inter_op_threads))
    started = time.perf_counter()
    described = describe(artifact.name, artifact.metadata, artifact.model_path)
    describe_seconds = time.perf_counter() - started
    explainer = Explainer(described, max_passes=settings.max_explain_passes, batch_size=batch_size,
                          batch_seconds=batch_seconds)
    images = images_for(bench_key, count, runtime.spec)

    async def forward(batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        return runtime.run(batch, outputs)

    async def explain_all(method: str) -> dict[str, Any]:
        plan = explainer.plan(ExplainRequest(method=method))
        await explainer.run(plan, images[0], forward)  # warm-up
        latencies, cpu, forward_s, compute_s, passes, wins = [], [], [], [], [], []
        deletion, insertion, random_deletion = [], [], []
        for image in images:
            t0, c0 = time.perf_counter(), time.process_time()
            result = await explainer.run(plan, image, forward)
            latencies.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # every thread's CPU, onnxruntime's included
            forward_s.append(result.forward_seconds)
            compute_s.append(result.compute_seconds)
            passes.append(result.forward_passes)
            assert result.faithfulness is not None
            wins.append(result.faithfulness.beats_random)
            deletion.append(result.faithfulness.deletion)
            insertion.append(result.faithfulness.insertion)
            random_deletion.append(result.faithfulness.random_deletion)
        return {
            "model": bench.name, "method": method, "layer": plan.layer.name if plan.layer else None,
            "images": len(images), "passes": max(passes), "method_passes": plan.method_passes,
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_max_ms": 1000 * max(latencies), "cpu_ms": 1000 * statistics.median(cpu),
            "forward_ms": 1000 * statistics.median(forward_s), "engine_ms": 1000 * statistics.median(compute_s),
            "beats_chance": sum(wins) / len(wins), "deletion": float(np.mean(deletion)),
            "insertion": float(np.mean(insertion)), "random_deletion": float(np.mean(random_deletion)),
            "describe_ms": 1000 * describe_seconds, "batch_size": batch_size, "batch_seconds": batch_seconds,
        }

    async def explain_every_method() -> list[dict[str, Any]]:
        rows = []
        for method in methods:
            rows.append(await explain_all(method))
            print(json.dumps(rows[-1]), file=sys.stderr)
        return rows

    rows = asyncio.run(explain_every_method())
    return rows


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info.get('cpu', '?')}, {info.get('usable_cpus', '?')} usable CPUs, load {info.get('loadavg_start', '?')}; onnxruntime {info.get('onnxruntime', '?')}.",
        "",
        "| model | method | layer | passes (method's) | p50 latency ms | forward ms | engine ms | CPU ms "
        "| beats chance | deletion | insertion | random deletion |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['layer'] or '-'} | {r['passes']} ({r['method_passes']}) "
            f"| {r['latency_p50_ms']:.0f} | {r['forward_ms']:.0f} | {r['engine_ms']:.0f} | {r['cpu_ms']:.0f} "
            f"| {r['beats_chance']:.0%} of {r['images']} | {r['deletion']:.3f} | {r['insertion']:.3f} "
            f"| {r['random_deletion']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from service.explain import METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tinyvgg,alexnet")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repository", type=Path, default=ROOT / "benchmarks" / "out" / "models")
    parser.add_argument("--images", type=int, default=None, help="default: 30 digits, 2 photos")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward call")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="also cap each forward call at this much model time (Explainer's batch_seconds)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for key in args.models.split(","):
        export_if_missing(BENCHES[key], args.repository, dict(os.environ))
        count = args.images or (30 if key == "tinyvgg" else 2)
        rows += measure(key, args.repository, args.methods.split(","), count, args.batch_size, args.batch_seconds)
    print(markdown(rows, machine_info()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
