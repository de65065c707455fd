"""Workers x onnxruntime threads (issue 14): the same point for each configuration, on a
fresh server each time, in interleaved rounds so a drifting machine hits them alike.

Each configuration is ``workers x intra-op threads`` with a launcher: ``reuseport`` (the
service's own, ``python -m service``: one SO_REUSEPORT socket per worker) or
``uvicorn`` (uvicorn's ``--workers``: one shared socket the processes race to accept on,
what the service did before issue 14). Reported: images/s, p50, server CPU per image
(steadier than speed on a shared machine), and how many connections each worker held.

    python -m benchmarks.workers --models tinyvgg --configs 1x1,1x2,2x1 --rounds 2
    python -m benchmarks.workers --models alexnet --configs 1x2,2x1 --concurrency 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from pathlib import Path

from benchmarks import loadgen
from benchmarks.images import write_body
from benchmarks.run import (
    BENCHES,
    OUT,
    Server,
    export_if_missing,
    free_port,
    log,
    process_tree,
    subset_repository,
)


def connections_per_worker(server: Server, port: int) -> list[int]:
    """Established server-side connections on ``port`` held by each process of the server."""
    inode_port = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            inode_port[int(fields[9])] = port
    counts = []
    for pid in process_tree(server.process.pid):
        held = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and int(target[8:-1]) in inode_port:
                    held += 1
        except OSError:
            continue
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


def run_point(key: str, launcher: str, workers: int, threads: int, repository: Path, body: Path,
              content_type: str, concurrency: int, seconds: float, warmup: float, generator: str) -> dict:
    bench = BENCHES[key]
    subset = subset_repository(repository, [bench.name])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update({"CONVSCOPE_INTRA_OP_THREADS": str(threads), "CONVSCOPE_MODEL_REPOSITORY": str(subset),
                "CONVSCOPE_LOG_LEVEL": "warning", "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    port = free_port()
    if launcher == "uvicorn":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(OUT / f"metrics-{port}")
        Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "uvicorn", "service.app:create_app_from_env", "--factory", "--host",
               "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
               "--no-access-log"]
    else:
        cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    server = Server(f"workers-{launcher}-{workers}x{threads}", cmd, env, "/readyz", port)
    try:
        url = f"{server.url}/v1/models/{bench.name}/predict"
        loadgen.measure(url, body, content_type, concurrency, warmup, 0, generator)  # warm, connections open
        cpu0 = server.cpu()
        spread: list[int] = []
        # Half-way through the point, while every connection is open.
        probe = threading.Timer(seconds / 2, lambda: spread.extend(connections_per_worker(server, port)))
        probe.start()
        result = loadgen.measure(url, body, content_type, concurrency, seconds, 0, generator)
        probe.join()
        cpu = server.cpu() - cpu0
    finally:
        server.stop()
    return {"images_per_s": result.rps, "p50_ms": result.p50_ms, "errors": result.errors,
            "cpu_ms_per_image": 1000 * cpu / max(1, result.requests), "cores": cpu / result.seconds,
            "spread": spread}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tinyvgg")
    parser.add_argument("--configs", default="1x1,1x2,2x1", help="WORKERSxTHREADS, comma separated")
    parser.add_argument("--launchers", default="reuseport", help="reuseport,uvicorn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repository", type=Path, default=OUT / "models")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args(argv)
    generator = args.loadgen if args.loadgen != "auto" else ("wrk" if loadgen.have_wrk() else "httpx")
    repository = args.repository.resolve()
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    launchers = args.launchers.split(",")
    print(f"load average at start {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; c={args.concurrency}; "
          f"{args.duration:g} s points, {args.rounds} interleaved rounds")
    print("| model | launcher | workers x threads | images/s (each round) | median | p50 ms | server CPU ms/image "
          "| cores | connections per worker |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in args.models.split(","):
        bench = BENCHES[key]
        export_if_missing(bench, repository, dict(os.environ))
        body, content_type = write_body(OUT / "bodies", bench.name, bench.channels, bench.size)
        results: dict[tuple[str, int, int], list[dict]] = {}
        for _ in range(args.rounds):
            for launcher in launchers:
                for workers, threads in configs:
                    if launcher == "uvicorn" and workers == 1:
                        continue  # one process: the launchers are the same
                    log(f"[{key}] {launcher} {workers}x{threads}")
                    point = run_point(key, launcher, workers, threads, repository, body, content_type,
                                      args.concurrency, args.duration, args.warmup, generator)
                    results.setdefault((launcher, workers, threads), []).append(point)
        for (launcher, workers, threads), points in results.items():
            rates = [p["images_per_s"] for p in points]
            print(f"| {key} | {launcher} | {workers}x{threads} | {' / '.join(f'{r:.0f}' for r in rates)} | "
                  f"{statistics.median(rates):.0f} | {statistics.median(p['p50_ms'] for p in points):.2f} | "
                  f"{statistics.median(p['cpu_ms_per_image'] for p in points):.2f} | "
                  f"{statistics.median(p['cores'] for p in points):.2f} | "
                  f"{' ; '.join(str(p['spread']) for p in points)} |")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
