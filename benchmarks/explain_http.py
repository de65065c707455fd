"""Explanations over HTTP (issue 12): what they cost, and what they cost predictions.

For each model (tinyvgg on digits, AlexNet at 224), against one ``python -m service``:

1. per method, alone: explanations one after another, each method with its default
   settings (faithfulness on): forward passes and latency (p50, max) over HTTP;
2. predictions at concurrency 8 with wrk (as ``benchmarks.run`` measures them), alone,
   then again while 2 clients explain (default method, occlusion) one image after another
   on the same model: p50/p95/p99 of the predictions, and the explanations' own latency.
   The issue's target: p99 with explanations <= 2x p99 alone.

Also the server's idle RSS once its models are loaded (``--rss-only`` measures only that,
and ``--source DIR`` runs the service of another checkout, for a before/after).

    python -m benchmarks.explain_http                     # both models, ~4 minutes once exported
    python -m benchmarks.explain_http --models tinyvgg --seconds 10
    python -m benchmarks.explain_http --models alexnet --rss-only [--source /path/to/checkout]

Models are exported into ``benchmarks/out/models`` when missing (as ``benchmarks.run`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.images import write_body
from benchmarks.run import BENCHES, OUT, ROOT, export_if_missing, log, machine_info, subset_repository, worker_rss_mb
from service.testing import ServerProcess, free_port

CONCURRENCY = 8
EXPLAINERS = 2
TARGET_FACTOR = 2.0
METHODS = ("occlusion", "rise", "score-cam", "grad-cam", "hires-cam", "eigen-cam")


class Explainers:
    """``count`` clients, each explaining the same image one request after another."""

    def __init__(self, url: str, body: bytes, content_type: str, count: int) -> None:
        self.url, self.body, self.content_type = url, body, content_type
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.passes: list[int] = []
        self.errors = 0
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(count)]

    def _client(self) -> None:
        import httpx

        with httpx.Client(timeout=300) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                response = client.post(self.url, content=self.body, headers={"content-type": self.content_type})
                if response.status_code == 200:
                    self.latencies.append(time.perf_counter() - started)
                    self.passes.append(response.json()["forward_passes"])
                else:
                    self.errors += 1

    def __enter__(self) -> Explainers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(300)


def per_method(url: str, body: bytes, content_type: str, requests: int) -> list[dict[str, Any]]:
    import httpx

    rows = []
    with httpx.Client(timeout=600) as client:
        for method in METHODS:
            latencies, passes, answers = [], [], []
            for i in range(requests + 1):  # the first is a warm-up
                started = time.perf_counter()
                response = client.post(url, params={"method": method}, content=body,
                                       headers={"content-type": content_type})
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    rows.append({"method": method, "error": response.json().get("error")})
                    break
                if i:
                    answer = response.json()
                    latencies.append(elapsed * 1000)
                    passes.append(answer["forward_passes"])
                    answers.append(answer)
            else:
                last = answers[-1]
                rows.append({
                    "method": method, "layer": last["layer"], "passes": passes[-1],
                    "p50_ms": statistics.median(latencies), "max_ms": max(latencies),
                    "queue_ms": statistics.median(a["timings_ms"]["queue"] for a in answers),
                    "inference_ms": statistics.median(a["timings_ms"]["inference"] for a in answers),
                    "engine_ms": statistics.median(a["timings_ms"]["engine"] for a in answers),
                    "beats_random": last["faithfulness"]["beats_random"],
                })
                log(f"    {method:10s} passes {passes[-1]:5d}  p50 {rows[-1]['p50_ms']:9.1f} ms  "
                    f"(queue {rows[-1]['queue_ms']:.1f}, inference {rows[-1]['inference_ms']:.1f}, "
                    f"engine {rows[-1]['engine_ms']:.1f})")
    return rows


def interference(server: ServerProcess, name: str, body_path: Path, content_type: str, seconds: float,
                 warmup: float) -> dict[str, Any]:
    predict = f"{server.url}/v1/models/{name}/predict"
    explain = f"{server.url}/v1/models/{name}/explain"
    alone = loadgen.measure(predict, body_path, content_type, CONCURRENCY, seconds, warmup, "auto")
    log(f"    predict c={CONCURRENCY} alone:           p50 {alone.p50_ms:8.2f}  p95 {alone.p95_ms:8.2f}  "
        f"p99 {alone.p99_ms:8.2f} ms  {alone.rps:8.1f} req/s  errors {alone.errors}")
    with Explainers(explain, body_path.read_bytes(), content_type, EXPLAINERS) as explainers:
        mixed = loadgen.measure(predict, body_path, content_type, CONCURRENCY, seconds, warmup, "auto")
    done = len(explainers.latencies)
    log(f"    predict c={CONCURRENCY} + {EXPLAINERS} explaining: p50 {mixed.p50_ms:8.2f}  p95 {mixed.p95_ms:8.2f}  "
        f"p99 {mixed.p99_ms:8.2f} ms  {mixed.rps:8.1f} req/s  errors {mixed.errors}; "
        f"{done} explanations, p50 {statistics.median(explainers.latencies) * 1000 if done else float('nan'):.0f} ms, "
        f"errors {explainers.errors}")
    return {
        "alone": alone.as_dict(), "with_explanations": mixed.as_dict(),
        "p99_factor": mixed.p99_ms / alone.p99_ms if alone.p99_ms else None,
        "explanations": {"count": done, "errors": explainers.errors,
                         "p50_ms": statistics.median(explainers.latencies) * 1000 if done else None,
                         "max_ms": max(explainers.latencies) * 1000 if done else None,
                         "passes": explainers.passes[-1] if done else None},
    }


def start(repository: Path, env: dict[str, str], source: Path, label: str) -> ServerProcess:
    """``python -m service`` of the checkout ``source`` (its directory is the first on the path)."""
    port = free_port()
    return ServerProcess([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                          "--model-repository", str(repository), "--log-level", "warning"],
                         port=port, env={**env, "PYTHONPATH": str(source)}, cwd=source,
                         log=OUT / "logs" / f"{label}.log", timeout=300.0)


def idle_rss(server: ServerProcess) -> float:
    time.sleep(2.0)  # let the load's last frees settle
    return max(worker_rss_mb(server.process.pid).values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tinyvgg,alexnet")
    parser.add_argument("--repository", type=Path, default=OUT / "models")
    parser.add_argument("--seconds", type=float, default=15.0, help="each wrk measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=0,
                        help="explanations per method, alone (default: 5 for tinyvgg, 2 for alexnet)")
    parser.add_argument("--rss-only", action="store_true", help="only the idle RSS of each model's server")
    parser.add_argument("--no-methods", action="store_true", help="skip the per-method measurements")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose service runs")
    parser.add_argument("--json", type=Path, default=OUT / "explain_http.json")
    parser.add_argument("--note", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env["PYTHONPATH"] = str(ROOT)
    info = machine_info()
    info["note"] = args.note
    results: dict[str, Any] = {"info": info, "models": {}}
    log(f"machine: {info['cpu']}, {info['usable_cpus']} CPUs, load average {os.getloadavg()[0]:.2f}")
    for key in [m.strip() for m in args.models.split(",") if m.strip()]:
        bench = BENCHES[key]
        export_if_missing(bench, args.repository, env)
        repository = subset_repository(args.repository, [bench.name])
        body_path, content_type = write_body(OUT / "bodies", bench.name, bench.channels, bench.size)
        server = start(repository, env, args.source.resolve(), f"explain-{key}")
        try:
            rss = idle_rss(server)
            log(f"[{key}] idle RSS {rss:.0f} MB ({args.source})")
            row: dict[str, Any] = {"idle_rss_mb": rss, "source": str(args.source)}
            if not args.rss_only:
                requests = args.requests or (5 if key == "tinyvgg" else 2)
                if not args.no_methods:
                    log(f"[{key}] each method alone, {requests} explanations")
                    row["methods"] = per_method(f"{server.url}/v1/models/{bench.name}/explain",
                                                body_path.read_bytes(), content_type, requests)
                log(f"[{key}] predictions at concurrency {CONCURRENCY}, alone and with {EXPLAINERS} explaining")
                row["interference"] = interference(server, bench.name, body_path, content_type, args.seconds,
                                                   args.warmup)
                factor = row["interference"]["p99_factor"]
                verdict = "PASS" if factor is not None and factor <= TARGET_FACTOR else "MISS"
                log(f"[{key}] p99 with explanations / alone = {factor:.2f} (target <= {TARGET_FACTOR:g}): {verdict}")
            results["models"][key] = row
        finally:
            server.stop()
    info["loadavg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str))
    log(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
