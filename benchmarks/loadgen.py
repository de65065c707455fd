"""Closed-loop HTTP load: a fixed number of connections, each sending its next request as
soon as the previous answer arrives, for a fixed time after a short warm-up.

Two generators, the same report:

- ``wrk`` (preferred; Debian package ``wrk``): one C thread on epoll, so it costs the
  server almost no CPU. A Lua script sets the method, body and headers, counts non-2xx
  answers per thread and prints percentiles from ``latency:percentile()`` in ``done()``.
- an asyncio + httpx generator (fallback when wrk is absent): pure Python, so on a small
  machine it takes a real share of a core from the server; the report says which one ran.

``python -m benchmarks.loadgen URL --body FILE --content-type image/png -c 16 -d 10``
runs one point by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Counts non-2xx per thread (done() runs in another Lua state, so it reads them back
# through the thread objects kept by setup()), and prints one JSON line at the end.
WRK_SCRIPT = r"""
local body_path = os.getenv("BENCH_BODY")
local f = assert(io.open(body_path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

non2xx = 0
bytes_in = 0

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "non2xx": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, bad,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass
class LoadResult:
    """One measured point. Latencies in milliseconds; ``rps`` counts requests (one image each)."""

    generator: str
    concurrency: int
    seconds: float
    requests: int
    errors: int  # non-2xx answers + connect/read/write/timeout errors
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    client_cpu: float = math.nan  # cores the load generator itself used (CPU s / wall s)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, body: Path, content_type: str, concurrency: int, seconds: float,
            warmup: float, timeout_s: float = 30.0) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="convscope-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type}

        def wrk(duration: float) -> dict[str, float]:
            # One thread: an epoll loop in C keeps 64 connections busy at a few % of a core.
            cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
                   f"--timeout={int(timeout_s)}s", "-s", str(script), url]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + timeout_s + 30)
            for line in done.stdout.splitlines():
                if line.startswith("BENCH_JSON "):
                    return json.loads(line[len("BENCH_JSON "):])
            raise RuntimeError(f"wrk gave no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")

        if warmup > 0:
            wrk(warmup)
        cpu0 = _children_cpu()
        out = wrk(seconds)
        cpu = _children_cpu() - cpu0
    wall = out["duration_us"] / 1e6
    errors = int(out["non2xx"] + out["connect"] + out["read"] + out["write"] + out["timeout"])
    return LoadResult(
        generator="wrk", concurrency=concurrency, seconds=wall, requests=int(out["requests"]),
        # Only 2xx answers are images served: a quick 503 is not throughput (as in the httpx path).
        errors=errors, rps=(out["requests"] - errors) / wall if wall else 0.0,
        p50_ms=out["p50_us"] / 1000.0, p95_ms=out["p95_us"] / 1000.0, p99_ms=out["p99_us"] / 1000.0,
        client_cpu=cpu / wall if wall else math.nan,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _httpx_load(url: str, body: bytes, content_type: str, concurrency: int,
                      seconds: float, warmup: float, timeout_s: float) -> LoadResult:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Content-Type": content_type}
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        measuring_from = time.perf_counter() + warmup
        stop_at = measuring_from + seconds

        async def worker() -> None:
            nonlocal errors
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                try:
                    response = await client.post(url, content=body, headers=headers)
                    await response.aread()
                    ok = 200 <= response.status_code < 300
                except httpx.HTTPError:
                    ok = False
                finished = time.perf_counter()
                if started >= measuring_from and finished <= stop_at:
                    if ok:
                        latencies.append(finished - started)
                    else:
                        errors += 1

        cpu0 = time.process_time()
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - began
    latencies.sort()
    return LoadResult(
        generator="httpx", concurrency=concurrency, seconds=seconds,
        requests=len(latencies) + errors, errors=errors, rps=len(latencies) / seconds,
        p50_ms=percentile(latencies, 50) * 1000.0, p95_ms=percentile(latencies, 95) * 1000.0,
        p99_ms=percentile(latencies, 99) * 1000.0, client_cpu=cpu / wall if wall else math.nan,
    )


def run_httpx(url: str, body: Path, content_type: str, concurrency: int, seconds: float,
              warmup: float, timeout_s: float = 30.0) -> LoadResult:
    return asyncio.run(_httpx_load(url, body.read_bytes(), content_type, concurrency, seconds, warmup, timeout_s))


def measure(url: str, body: Path, content_type: str, concurrency: int, seconds: float,
            warmup: float, generator: str = "auto") -> LoadResult:
    """One point: ``generator`` is wrk, httpx, or auto (wrk when installed)."""
    if generator == "auto":
        generator = "wrk" if have_wrk() else "httpx"
    if generator == "wrk":
        if not have_wrk():
            raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk); use --loadgen httpx")
        return run_wrk(url, body, content_type, concurrency, seconds, warmup)
    if generator == "httpx":
        return run_httpx(url, body, content_type, concurrency, seconds, warmup)
    raise ValueError(f"unknown load generator {generator!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True, help="file sent as the raw request body")
    parser.add_argument("--content-type", default="application/octet-stream")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("-w", "--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--generator", choices=("auto", "wrk", "httpx"), default="auto")
    args = parser.parse_args(argv)
    result = measure(args.url, args.body, args.content_type, args.concurrency, args.duration,
                     args.warmup, args.generator)
    json.dump(result.as_dict(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
