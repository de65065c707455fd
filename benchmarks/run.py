"""Issue 5's benchmark, in one run on one machine: raw onnxruntime (the limit), the convscope
service over HTTP, and the naive PyTorch-eager FastAPI baseline, for TinyVGG on digits
and AlexNet at 224; every figure also as a ratio to raw onnxruntime, the issue's targets
checked (PASS/MISS), and a markdown table written to ``--out``.

    python -m benchmarks.run            # full run, about 8 minutes (make bench)
    python -m benchmarks.run --quick    # smoke run, about 1.5 minutes once models exist

Server settings come from the environment (``CONVSCOPE_*``) and ``--env KEY=VALUE``; the
raw onnxruntime figures use the same ones (intra/inter-op threads, providers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.images import PHOTOS, write_body, write_photo
from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"

# Issue 5's targets.
THROUGHPUT_SHARE = 0.85  # alexnet, concurrency 16: served images/s >= 85% of raw best batch
LATENCY_SLACK_MS = 1.5  # concurrency 1: p50 <= raw batch-1 p50 + 1.5 ms
FEATURES_OVERHEAD = 0.25  # all maps as npy, concurrency 1: p50 <= 1.25 x predictions-only p50
NAIVE_FACTOR = 2.0  # concurrency 16: >= 2x the naive baseline's images/s
TARGET_CONCURRENCY = 16
# Issue 14's targets.
PHOTO_SHARE = 0.6  # camera photos, concurrency 16: >= 60% of the 224 px JPEG's images/s
PHOTO_DECODE_FACTOR = 10.0  # 12 MP JPEG decode+preprocess <= 10x the 224 px JPEG's
NAIVE_FACTOR_14 = 1.3  # tinyvgg, concurrency 16: >= 1.3x the naive baseline
WORKERS_FACTOR = 1.6  # tinyvgg, concurrency 16: two workers >= 1.6x one
THROUGHPUT_SHARE_14 = 0.80  # alexnet, concurrency 16: >= 80% of raw best batch
IDLE_RSS_FACTOR = 1.5  # alexnet: idle RSS per worker <= 1.5x model.onnx


@dataclass(frozen=True)
class Bench:
    key: str  # what --models names
    name: str  # model name in the repository
    export_args: tuple[str, ...]
    channels: int
    size: tuple[int, int]


BENCHES = {
    "tinyvgg": Bench("tinyvgg", "digits-tinyvgg",
                     ("--arch", "tinyvgg", "--dataset", "digits"), 1, (28, 28)),
    "alexnet": Bench("alexnet", "digits-alexnet",
                     ("--arch", "alexnet", "--dataset", "digits", "--epochs", "0"), 3, (224, 224)),
}


@dataclass
class Row:
    """One line of the results table."""

    model: str
    system: str  # raw | service | naive
    path: str  # "batch 8", "predict", "features (npy)", ...
    concurrency: int | None
    images_per_s: float
    p50_ms: float
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# -- helpers ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def version_of(dist: str) -> str:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return "absent"


def machine_info() -> dict[str, Any]:
    cpu, physical = platform.processor() or "unknown", None
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = names[0].strip() if names else cpu
        cores = {(p, c) for p, c in re.findall(r"^physical id\s*:\s*(\d+)\n(?:.*\n)*?core id\s*:\s*(\d+)", text, re.M)}
        physical = len(cores) or None
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "physical_cores": physical,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "onnxruntime": version_of("onnxruntime"),
        "torch": version_of("torch"),
        "uvicorn": version_of("uvicorn"),
        "uvloop": version_of("uvloop"),
        "httptools": version_of("httptools"),
        "loadavg_start": os.getloadavg(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "service"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + (" (service/ modified)" if dirty else "")
    except OSError:
        return "unknown"


def export_if_missing(bench: Bench, repository: Path, env: dict[str, str]) -> None:
    if any((repository / bench.name).glob("*/metadata.json")):
        return
    log(f"exporting {bench.name} into {repository} (once) ...")
    cmd = [sys.executable, "-m", "model_export", *bench.export_args, "--name", bench.name,
           "--out", str(repository), "--quiet", "--if-missing"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == current)
    return total


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(child for child, parent in parents.items() if parent == current)
    return found


def status_mb(pid: int, field: str) -> float:
    """One memory field of a process's /proc/PID/status (VmRSS, RssAnon, ...) in MB (10^6
    bytes), NaN when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return math.nan
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 / 1e6 if match else math.nan


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MB (10^6 bytes), NaN when it is gone."""
    return status_mb(pid, "VmRSS")


def worker_rss_mb(pid: int) -> dict[int, float]:
    """RSS of each process of a server that holds models: the server itself when it has no
    children, else its children (the workers; the supervisor holds no model)."""
    tree = process_tree(pid)
    workers = [p for p in tree if p != pid] or [pid]
    return {p: rss_mb(p) for p in workers}


class RssSampler:
    """Samples every worker's RSS every ``interval`` seconds in a thread; ``peak`` is the
    largest RSS any one worker reached while it ran."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import threading

        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            values = [v for v in worker_rss_mb(self.pid).values() if not math.isnan(v)]
            self.peak = max([self.peak, *values])
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Server(ServerProcess):
    """A server subprocess on a free loopback port, its log in benchmarks/out/logs/."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int) -> None:
        self.name = name
        super().__init__(cmd, port=port, env=env, cwd=ROOT, log=OUT / "logs" / f"{name}.log",
                         ready_path=ready_path, timeout=300.0)

    def cpu(self) -> float:
        return process_tree_cpu(self.pid)


def scrape(url: str, model: str) -> dict[str, float]:
    """The batcher's counters for one model from /metrics: images, runs, compute seconds."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = {
        "images": "convscope_inference_count_total",
        "runs": "convscope_inference_exec_count_total",
        "compute_s": "convscope_inference_compute_duration_seconds_sum",
        "queue_s": "convscope_inference_queue_duration_seconds_sum",
    }
    out = {}
    for key, metric in wanted.items():
        match = re.search(rf'^{metric}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$', text, re.M)
        out[key] = float(match.group(1)) if match else math.nan
    return out


def check_answer(url: str, body: Path, content_type: str) -> None:
    import httpx

    response = httpx.post(url, content=body.read_bytes(), headers={"Content-Type": content_type}, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")


# -- the three systems ---------------------------------------------------------------------


def measure_raw(bench: Bench, repository: Path, body: Path, env: dict[str, str], seconds: float,
                batches: list[int], quiet: bool = False) -> list[Row]:
    if not quiet:
        log(f"[raw onnxruntime] {bench.name}: batches {', '.join(map(str, batches))}, {seconds:g} s each")
    cmd = [sys.executable, "-m", "benchmarks.raw", str(repository / bench.name), "--body", str(body),
           "--batches", ",".join(map(str, batches)), "--duration", str(seconds),
           "--warmup", str(min(1.0, seconds / 2))]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for item in result["batches"]:
        rows.append(Row(bench.key, "raw", f"onnxruntime batch {item['batch']}", None, item["images_per_s"],
                        item["p50_ms"], extra={"batch": item["batch"], "runs": item["runs"],
                                               "server_cpu": item["cpu_cores"],
                                               "server_cpu_ms_per_image": item["cpu_ms_per_image"]}))
        if not quiet:
            log(f"    batch {item['batch']:>2}: {item['images_per_s']:9.1f} images/s, p50 {item['p50_ms']:.3f} ms/run")
    return rows


def measure_http(server: Server, bench: Bench, system: str, path_label: str, url: str, body: Path,
                 content_type: str, concurrencies: list[int], seconds: float, warmup: float,
                 generator: str, metrics_model: str | None) -> list[Row]:
    check_answer(url, body, content_type)
    rows = []
    for concurrency in concurrencies:
        before = scrape(server.url, metrics_model) if metrics_model else {}
        cpu0, t0 = server.cpu(), time.perf_counter()
        with RssSampler(server.process.pid) as sampler:
            result = loadgen.measure(url, body, content_type, concurrency, seconds, warmup, generator)
        # The server's CPU over warm-up + measurement, spread over both (they run alike).
        cpu, wall = server.cpu() - cpu0, time.perf_counter() - t0
        after = scrape(server.url, metrics_model) if metrics_model else {}
        extra: dict[str, Any] = {"generator": result.generator, "client_cpu": result.client_cpu,
                                 "server_cpu": cpu / wall if wall else math.nan,
                                 "peak_rss_mb": sampler.peak}
        if result.rps > 0:
            extra["server_cpu_ms_per_image"] = 1000.0 * (cpu / wall) / result.rps
        if before and after:
            runs = after["runs"] - before["runs"]
            images = after["images"] - before["images"]
            if runs > 0:
                extra["mean_batch"] = images / runs
                extra["compute_ms_per_run"] = 1000.0 * (after["compute_s"] - before["compute_s"]) / runs
                extra["queue_ms_mean"] = 1000.0 * (after["queue_s"] - before["queue_s"]) / images
        rows.append(Row(bench.key, system, path_label, concurrency, result.rps, result.p50_ms,
                        result.p95_ms, result.p99_ms, result.errors, extra))
        log(f"    c={concurrency:>3}: {result.rps:9.1f} images/s  p50 {result.p50_ms:8.2f}  p95 {result.p95_ms:8.2f}  "
            f"p99 {result.p99_ms:8.2f} ms  errors {result.errors}  server CPU {extra['server_cpu']:.2f} cores"
            + (f"  mean batch {extra['mean_batch']:.1f}" if "mean_batch" in extra else ""))
    return rows


def server_timing_ms(url: str, body: Path, content_type: str, requests: int, warmup: int = 3) -> dict[str, float]:
    """Median decode, preprocess and decode+preprocess ms over ``requests`` sequential
    requests, from the service's own Server-Timing header (the client's side excluded)."""
    import statistics

    import httpx

    data = body.read_bytes()
    samples: dict[str, list[float]] = {"decode": [], "preprocess": [], "decode+preprocess": []}
    with httpx.Client(timeout=60, headers={"Content-Type": content_type}) as client:
        for i in range(warmup + requests):
            response = client.post(url, content=data)
            response.raise_for_status()
            if i < warmup:
                continue
            parts = dict(re.findall(r"(\w+);dur=([\d.eE+-]+)", response.headers.get("server-timing", "")))
            decode, prep = float(parts.get("decode", "nan")), float(parts.get("preprocess", "nan"))
            samples["decode"].append(decode)
            samples["preprocess"].append(prep)
            samples["decode+preprocess"].append(decode + prep)
    return {k: statistics.median(v) for k, v in samples.items()}


def measure_photos(server: Server, bench: Bench, photos: dict[str, tuple[Path, str]], concurrency: int,
                   seconds: float, warmup: float, generator: str, requests: int) -> list[Row]:
    """Issue 14's photo rows: decode+preprocess ms per image (Server-Timing, one client)
    and served images/s at ``concurrency`` for each photo, predictions only."""
    url = f"{server.url}/v1/models/{bench.name}/predict"
    rows = []
    for key, (body, content_type) in photos.items():
        timing = server_timing_ms(url, body, content_type, requests)
        log(f"    {key}: decode {timing['decode']:.2f} + preprocess {timing['preprocess']:.2f} ms (median of {requests})")
        (row,) = measure_http(server, bench, "service", f"photo {key}", url, body, content_type, [concurrency],
                              seconds, warmup, generator, bench.name)
        row.extra.update({f"{k}_ms": v for k, v in timing.items()})
        row.extra["body_bytes"] = body.stat().st_size
        rows.append(row)
    return rows


def subset_repository(repository: Path, names: list[str]) -> Path:
    """A repository of symlinks holding only ``names`` (a server that loads less starts faster)."""
    subset = OUT / ("repo-" + "-".join(names))
    subset.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = subset / name
        if not link.exists():
            link.symlink_to(repository / name, target_is_directory=True)
    return subset


def measure_workers(bench: Bench, repository: Path, body: Path, content_type: str, env: dict[str, str],
                    workers: list[int], concurrency: int, seconds: float, warmup: float,
                    generator: str) -> list[Row]:
    """The same point with 1, 2, ... worker processes, each on a fresh server."""
    rows = []
    subset = subset_repository(repository, [bench.name])
    for count in workers:
        port = free_port()
        log(f"[workers] {bench.name} with CONVSCOPE_WORKERS={count}")
        server = Server(f"workers-{count}", [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port",
                                             str(port), "--model-repository", str(subset), "--log-level",
                                             "warning", "--workers", str(count)],
                        env, "/readyz", port)
        try:
            url = f"{server.url}/v1/models/{bench.name}/predict"
            rows += measure_http(server, bench, "service", f"predict, {count} worker{'s' * (count > 1)}", url, body,
                                 content_type, [concurrency], seconds, warmup, generator, bench.name)
        finally:
            server.stop()
    return rows


# -- report ---------------------------------------------------------------------------------


def best_raw(rows: list[Row], model: str) -> Row:
    return max((r for r in rows if r.model == model and r.system == "raw"), key=lambda r: r.images_per_s)


def raw_batch1(rows: list[Row], model: str) -> Row:
    return next(r for r in rows if r.model == model and r.system == "raw" and r.extra.get("batch") == 1)


def find(rows: list[Row], model: str, system: str, path: str, concurrency: int) -> Row | None:
    return next((r for r in rows if r.model == model and r.system == system and r.path == path
                 and r.concurrency == concurrency), None)


@dataclass
class Target:
    text: str
    passed: bool | None  # None: not measured in this run
    detail: str


def check_targets(rows: list[Row], models: list[str]) -> list[Target]:
    targets: list[Target] = []
    if "alexnet" in models:
        served = find(rows, "alexnet", "service", "predict", TARGET_CONCURRENCY)
        best = best_raw(rows, "alexnet")
        text = f"alexnet, concurrency {TARGET_CONCURRENCY}: served images/s >= {THROUGHPUT_SHARE:.0%} of raw best batch"
        if served is None:
            targets.append(Target(text, None, "not measured"))
        else:
            share = served.images_per_s / best.images_per_s
            targets.append(Target(text, share >= THROUGHPUT_SHARE,
                                  f"{served.images_per_s:.1f} vs {best.images_per_s:.1f} ({best.path}) = {share:.0%}"))
    for model in models:
        one = find(rows, model, "service", "predict", 1)
        raw1 = raw_batch1(rows, model)
        text = f"{model}, concurrency 1: p50 <= raw batch-1 p50 + {LATENCY_SLACK_MS} ms"
        if one is None:
            targets.append(Target(text, None, "not measured"))
        else:
            limit = raw1.p50_ms + LATENCY_SLACK_MS
            targets.append(Target(text, one.p50_ms <= limit,
                                  f"{one.p50_ms:.2f} ms vs limit {limit:.2f} ms (raw {raw1.p50_ms:.3f} ms; "
                                  f"overhead {one.p50_ms - raw1.p50_ms:+.2f} ms)"))
    for model in models:
        one = find(rows, model, "service", "predict", 1)
        maps = find(rows, model, "service", "features (npy)", 1)
        text = f"{model}, concurrency 1: all feature maps as npy p50 <= predictions p50 + {FEATURES_OVERHEAD:.0%}"
        if one is None or maps is None:
            targets.append(Target(text, None, "not measured"))
        else:
            more = maps.p50_ms / one.p50_ms - 1.0
            targets.append(Target(text, more <= FEATURES_OVERHEAD,
                                  f"{maps.p50_ms:.2f} vs {one.p50_ms:.2f} ms = {more:+.0%}"))
    for model in models:
        served = find(rows, model, "service", "predict", TARGET_CONCURRENCY)
        naive = find(rows, model, "naive", "torch eager", TARGET_CONCURRENCY)
        text = f"{model}, concurrency {TARGET_CONCURRENCY}: >= {NAIVE_FACTOR:g}x the naive baseline's images/s"
        if served is None or naive is None or naive.images_per_s <= 0:
            targets.append(Target(text, None, "not measured"))
        else:
            factor = served.images_per_s / naive.images_per_s
            targets.append(Target(text, factor >= NAIVE_FACTOR,
                                  f"{served.images_per_s:.1f} vs {naive.images_per_s:.1f} = {factor:.2f}x"))
    return targets


def check_targets_14(rows: list[Row], models: list[str], memory: dict[str, Any]) -> list[Target]:
    """Issue 14's targets: camera photos, every core, memory."""
    targets: list[Target] = []
    if "alexnet" in models:
        base = find(rows, "alexnet", "service", "photo jpeg-224", TARGET_CONCURRENCY)
        for key in ("jpeg-12mp", "png-4k"):
            row = find(rows, "alexnet", "service", f"photo {key}", TARGET_CONCURRENCY)
            text = (f"alexnet, {key}, concurrency {TARGET_CONCURRENCY}: images/s >= {PHOTO_SHARE:.0%} "
                    "of the 224 px JPEG's")
            if row is None or base is None:
                targets.append(Target(text, None, "not measured"))
            else:
                share = row.images_per_s / base.images_per_s
                targets.append(Target(text, share >= PHOTO_SHARE,
                                      f"{row.images_per_s:.1f} vs {base.images_per_s:.1f} = {share:.0%}"))
        big = find(rows, "alexnet", "service", "photo jpeg-12mp", TARGET_CONCURRENCY)
        text = f"12 MP JPEG decode+preprocess <= {PHOTO_DECODE_FACTOR:g}x the 224 px JPEG's (Server-Timing)"
        if big is None or base is None:
            targets.append(Target(text, None, "not measured"))
        else:
            a, b = big.extra["decode+preprocess_ms"], base.extra["decode+preprocess_ms"]
            targets.append(Target(text, a <= PHOTO_DECODE_FACTOR * b, f"{a:.2f} vs {b:.2f} ms = {a / b:.1f}x"))
        served = find(rows, "alexnet", "service", "predict", TARGET_CONCURRENCY)
        best = best_raw(rows, "alexnet")
        text = (f"alexnet, concurrency {TARGET_CONCURRENCY}: served images/s >= {THROUGHPUT_SHARE_14:.0%} "
                "of raw best batch (issue 14)")
        if served is None:
            targets.append(Target(text, None, "not measured"))
        else:
            share = served.images_per_s / best.images_per_s
            targets.append(Target(text, share >= THROUGHPUT_SHARE_14,
                                  f"{served.images_per_s:.1f} vs {best.images_per_s:.1f} ({best.path}) = {share:.0%}"))
        text = f"alexnet: idle RSS per worker <= {IDLE_RSS_FACTOR:g}x model.onnx"
        if "idle_rss_mb" in memory:
            limit = IDLE_RSS_FACTOR * memory["alexnet_model_mb"]
            targets.append(Target(text, memory["idle_rss_mb"] <= limit,
                                  f"{memory['idle_rss_mb']:.0f} MB vs limit {limit:.0f} MB "
                                  f"({memory['idle_rss_mb'] / memory['alexnet_model_mb']:.2f}x)"))
        else:
            targets.append(Target(text, None, "not measured"))
    if "tinyvgg" in models:
        # Every core: the best service configuration measured (the main run, or N workers).
        candidates = [r for r in rows if r.model == "tinyvgg" and r.system == "service"
                      and r.concurrency == TARGET_CONCURRENCY and r.path.startswith("predict")]
        served = max(candidates, key=lambda r: r.images_per_s, default=None)
        naive = find(rows, "tinyvgg", "naive", "torch eager", TARGET_CONCURRENCY)
        text = (f"tinyvgg, concurrency {TARGET_CONCURRENCY}: >= {NAIVE_FACTOR_14:g}x the naive baseline's images/s "
                "(best service configuration)")
        if served is None or naive is None or naive.images_per_s <= 0:
            targets.append(Target(text, None, "not measured"))
        else:
            factor = served.images_per_s / naive.images_per_s
            targets.append(Target(text, factor >= NAIVE_FACTOR_14,
                                  f"{served.images_per_s:.1f} ({served.path}) vs {naive.images_per_s:.1f} "
                                  f"= {factor:.2f}x"))
        one = find(rows, "tinyvgg", "service", "predict, 1 worker", TARGET_CONCURRENCY)
        two = find(rows, "tinyvgg", "service", "predict, 2 workers", TARGET_CONCURRENCY)
        text = f"tinyvgg, concurrency {TARGET_CONCURRENCY}: two workers >= {WORKERS_FACTOR:g}x one worker"
        if one is None or two is None or one.images_per_s <= 0:
            targets.append(Target(text, None, "not measured"))
        else:
            factor = two.images_per_s / one.images_per_s
            targets.append(Target(text, factor >= WORKERS_FACTOR,
                                  f"{two.images_per_s:.1f} vs {one.images_per_s:.1f} = {factor:.2f}x"))
    return targets


def photo_table(rows: list[Row]) -> str:
    base = find(rows, "alexnet", "service", "photo jpeg-224", TARGET_CONCURRENCY)
    head = ("| photo | body | decode ms | preprocess ms | decode+preprocess ms | × 224 px | images/s (c=16) "
            "| × 224 px rate | p50 ms | errors | server CPU ms/image |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in (r for r in rows if r.path.startswith("photo ")):
        lines.append("| " + " | ".join([
            r.path.removeprefix("photo "), f"{r.extra['body_bytes'] / 1e6:.2f} MB",
            fmt(r.extra["decode_ms"], 2), fmt(r.extra["preprocess_ms"], 2), fmt(r.extra["decode+preprocess_ms"], 2),
            fmt(r.extra["decode+preprocess_ms"] / base.extra["decode+preprocess_ms"], 1) if base else "–",
            fmt(r.images_per_s), fmt(r.images_per_s / base.images_per_s, 2) if base else "–",
            fmt(r.p50_ms, 2), str(r.errors), fmt(r.extra.get("server_cpu_ms_per_image", math.nan), 2),
        ]) + " |")
    return "\n".join(lines)


def memory_lines(memory: dict[str, Any], rows: list[Row]) -> list[str]:
    lines = []
    if "idle_rss_mb" in memory:
        lines.append(f"- Idle RSS per worker, models loaded, before any request: {memory['idle_rss_mb']:.0f} MB "
                     f"(AlexNet's model.onnx: {memory['alexnet_model_mb']:.0f} MB; the server also holds TinyVGG, "
                     f"{memory.get('tinyvgg_model_mb', 0):.2f} MB)")
    if "idle_after_mb" in memory:
        lines.append(f"- Idle RSS per worker after the service points: {memory['idle_after_mb']:.0f} MB")
    for r in rows:
        if r.system == "service" and r.extra.get("peak_rss_mb") and r.model == "alexnet" \
                and r.path == "features (npy)" and r.concurrency == max(
                    x.concurrency or 0 for x in rows if x.model == "alexnet" and x.path == "features (npy)"):
            lines.append(f"- Peak RSS per worker, AlexNet every feature map as npy at concurrency {r.concurrency}: "
                         f"{r.extra['peak_rss_mb']:.0f} MB (sampled every 50 ms)")
    return lines


def fmt(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(rows: list[Row], models: list[str]) -> str:
    head = ("| model | system | path | conc. | images/s | × raw best | p50 ms | p95 ms | p99 ms "
            "| p50 × raw b1 | errors | mean batch | server CPU (cores) | server CPU ms/image |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for model in models:
        best = best_raw(rows, model)
        raw1 = raw_batch1(rows, model)
        for r in (r for r in rows if r.model == model):
            latency_ratio = r.p50_ms / raw1.p50_ms if r.system != "raw" or r is raw1 else math.nan
            lines.append("| " + " | ".join([
                model, r.system, r.path, "–" if r.concurrency is None else str(r.concurrency),
                fmt(r.images_per_s), f"{r.images_per_s / best.images_per_s:.2f}",
                fmt(r.p50_ms, 3 if r.p50_ms < 1 else 2), fmt(r.p95_ms, 2), fmt(r.p99_ms, 2),
                fmt(latency_ratio, 1), str(r.errors) if r.system != "raw" else "–",
                fmt(r.extra.get("mean_batch", math.nan)), fmt(r.extra.get("server_cpu", math.nan), 2),
                fmt(r.extra.get("server_cpu_ms_per_image", math.nan), 2),
            ]) + " |")
    return "\n".join(lines)


def markdown(rows: list[Row], models: list[str], targets: list[Target], info: dict[str, Any],
             args: argparse.Namespace, settings_env: dict[str, str], targets_14: list[Target] | None = None,
             memory: dict[str, Any] | None = None) -> str:
    started = info["started"]
    status = {True: "PASS", False: "MISS", None: "n/a"}
    env_text = ", ".join(f"`{k}={v}`" for k, v in sorted(settings_env.items())) or "none (defaults)"
    drifts = [abs(c / a - 1) for d in info["raw_drift"].values() for a, c in d.values() if a > 0]
    worst = max(drifts, default=0.0)
    noisy = info["loadavg_start"][0] > 0.5 * (info["usable_cpus"] or 1) or worst > 0.15
    parts = [
        "# convscope benchmark results (issue 5)",
        "",
        f"- Date: {started} UTC; commit {info['commit']}; {'quick smoke run' if args.quick else 'full run'}",
        f"- Machine: {info['cpu']}, {info['usable_cpus']} usable CPUs ({info['logical_cpus']} logical, "
        f"{info['physical_cores'] or '?'} physical cores), {info['memory_gib']} GiB; Python {info['python']}",
        f"- onnxruntime {info['onnxruntime']}, torch {info['torch']}, uvicorn {info['uvicorn']} "
        f"(uvloop {info['uvloop']}, httptools {info['httptools']})",
        f"- Load average before / after: {' / '.join(f'{a:.2f}' for a in info['loadavg_start'])} ; "
        f"{' / '.join(f'{a:.2f}' for a in info['loadavg_end'])}"
        + (" — **the machine was busy: these numbers are noisy**" if noisy else ""),
        "- Raw onnxruntime re-measured at the end (drift shows how steady the machine was): " + "; ".join(
            f"{m} " + ", ".join(f"batch {b} {a:.1f} -> {c:.1f} images/s ({c / a - 1:+.0%})" for b, (a, c) in d.items())
            for m, d in info["raw_drift"].items()) + (" — **over 15%: ratios are unreliable**" if worst > 0.15 else ""),
        f"- Load generator: {info['generator']}; {args.duration:g} s per point after {args.warmup:g} s warm-up; "
        f"raw onnxruntime {args.raw_duration:g} s per batch size",
        f"- Service settings from the environment: {env_text}",
        "",
    ]
    if info.get("note"):
        parts += [f"> {info['note']}", ""]
    parts += [
        "## Targets",
        "",
        *[f"- **{status[t.passed]}** {t.text}: {t.detail}" for t in targets],
        "",
    ]
    if targets_14:
        parts += ["Issue 14 (camera photos, every core, memory):", "",
                  *[f"- **{status[t.passed]}** {t.text}: {t.detail}" for t in targets_14], ""]
    main_rows = [r for r in rows if not r.path.startswith("photo ")]
    parts += [
        "## Results",
        "",
        "`× raw best`: images/s over raw onnxruntime's best batch; `p50 × raw b1`: p50 over raw "
        "onnxruntime's batch-1 p50. Raw rows' p50 is one `session.run` of the whole batch. "
        "`mean batch`: images per onnxruntime run inside the service (from /metrics). "
        "`server CPU`: cores the server process (for raw rows: the benchmark process) used during "
        "the point; `ms/image`: CPU per image, a figure that a busy machine disturbs less than speed.",
        "",
        table(main_rows, models),
        "",
    ]
    if any(r.path.startswith("photo ") for r in rows):
        parts += ["## Camera photos (AlexNet at 224)", "",
                  "Decode and preprocess: medians of the service's own Server-Timing over sequential requests; "
                  "images/s at concurrency 16, predictions only, as a ratio to the 224 px JPEG in the same run.",
                  "", photo_table(rows), ""]
    mem = memory_lines(memory or {}, rows)
    if mem:
        parts += ["## Memory", "", *mem, ""]
    return "\n".join(parts)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s points, concurrency 1 and 16, naive at 16 only")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown results (default benchmarks/RESULTS.md; "
                             "benchmarks/out/RESULTS.quick.md with --quick)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure as JSON here")
    parser.add_argument("--models", default="tinyvgg,alexnet", help=f"of: {', '.join(BENCHES)}")
    parser.add_argument("--repository", type=Path, default=OUT / "models",
                        help="model repository; missing models are exported into it")
    parser.add_argument("--concurrency", default=None, help="service concurrencies (default 1,8,16,32,64)")
    parser.add_argument("--naive-concurrency", default=None, help="naive baseline concurrencies (default 1,16)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per point (default 8)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per point (default 2)")
    parser.add_argument("--raw-duration", type=float, default=None, help="seconds per raw batch size (default 4)")
    parser.add_argument("--raw-batches", default="1,8,32", help="raw onnxruntime batch sizes (1 is required)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto",
                        help="auto: wrk when installed, else the asyncio + httpx generator")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="a service setting for this run (e.g. CONVSCOPE_INTRA_OP_THREADS=2); repeatable")
    parser.add_argument("--no-features", action="store_true", help="skip the feature-map (npy) points")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--no-photos", action="store_true", help="skip the camera-photo rows (AlexNet)")
    parser.add_argument("--no-workers", action="store_true", help="skip TinyVGG with 1 vs 2 workers")
    parser.add_argument("--photo-requests", type=int, default=None,
                        help="sequential requests per photo for the Server-Timing medians (default 20)")
    parser.add_argument("--workers-list", default="1,2", help="worker counts compared on TinyVGG (default 1,2)")
    parser.add_argument("--note", default="", help="a line quoted at the top of the results (e.g. why it was run)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    quick = args.quick
    args.concurrency = args.concurrency or ("1,16" if quick else "1,8,16,32,64")
    args.naive_concurrency = args.naive_concurrency or ("16" if quick else "1,16")
    args.duration = args.duration if args.duration is not None else (2.0 if quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.raw_duration = args.raw_duration if args.raw_duration is not None else (1.0 if quick else 4.0)
    args.photo_requests = args.photo_requests or (8 if quick else 20)
    args.out = args.out or (OUT / "RESULTS.quick.md" if quick else ROOT / "benchmarks" / "RESULTS.md")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in BENCHES]
    if unknown:
        log(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        return 2
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    naive_concurrencies = [int(c) for c in args.naive_concurrency.split(",")]
    raw_batches = sorted({1, *(int(b) for b in args.raw_batches.split(","))})
    settings_env = {k: v for k, v in os.environ.items() if k.startswith("CONVSCOPE_")}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            log(f"error: --env {item!r} is not KEY=VALUE")
            return 2
        settings_env[key if key.startswith("CONVSCOPE_") else f"CONVSCOPE_{key.upper()}"] = value
    for key in ("CONVSCOPE_MODEL_REPOSITORY", "CONVSCOPE_HOST", "CONVSCOPE_PORT"):
        settings_env.pop(key, None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update(settings_env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    generator = args.loadgen if args.loadgen != "auto" else ("wrk" if loadgen.have_wrk() else "httpx")

    info = machine_info()
    info["started"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    info["commit"] = git_commit()
    info["note"] = args.note
    info["generator"] = generator + ("" if generator == "wrk" else
                                     " (wrk not installed: the Python generator shares the server's CPUs)")
    log(f"machine: {info['cpu']}, {info['usable_cpus']} CPUs, load average {info['loadavg_start'][0]:.2f}; "
        f"load generator {generator}")
    repository = args.repository.resolve()
    bodies = {}
    for key in models:
        bench = BENCHES[key]
        export_if_missing(bench, repository, env)
        bodies[key] = write_body(OUT / "bodies", bench.name, bench.channels, bench.size)

    began = time.monotonic()
    rows: list[Row] = []
    for key in models:
        rows += measure_raw(BENCHES[key], repository, bodies[key][0], env, args.raw_duration, raw_batches)

    port = free_port()
    log(f"[service] python -m service on 127.0.0.1:{port}, repository {repository}")
    server = Server("service", [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                                "--model-repository", str(repository), "--log-level", "warning"],
                    env, "/readyz", port)
    memory: dict[str, Any] = {}
    try:
        time.sleep(1.0)  # let the load's last frees settle
        memory["idle_rss_mb"] = max(worker_rss_mb(server.process.pid).values())
        for key in models:
            memory[f"{key}_model_mb"] = sum(
                p.stat().st_size for p in (repository / BENCHES[key].name).glob("*/model.onnx")) / 1e6
        log(f"[service] idle RSS per worker {memory['idle_rss_mb']:.0f} MB")
        for key in models:
            bench = BENCHES[key]
            body, content_type = bodies[key]
            base = f"{server.url}/v1/models/{bench.name}/predict"
            log(f"[service] {bench.name} predictions")
            rows += measure_http(server, bench, "service", "predict", base, body, content_type,
                                 concurrencies, args.duration, args.warmup, generator, bench.name)
            if not args.no_features:
                log(f"[service] {bench.name} all feature maps as npy")
                rows += measure_http(server, bench, "service", "features (npy)", base + "?layers=all&encoding=npy",
                                     body, content_type, concurrencies, args.duration, args.warmup, generator,
                                     bench.name)
        if "alexnet" in models and not args.no_photos:
            log("[service] camera photos on alexnet")
            photos = {key: write_photo(OUT / "bodies", key) for key in PHOTOS}
            rows += measure_photos(server, BENCHES["alexnet"], photos, TARGET_CONCURRENCY, args.duration,
                                   args.warmup, generator, args.photo_requests)
        memory["idle_after_mb"] = max(worker_rss_mb(server.process.pid).values())
    finally:
        server.stop()

    if "tinyvgg" in models and not args.no_workers:
        bench = BENCHES["tinyvgg"]
        body, content_type = bodies["tinyvgg"]
        rows += measure_workers(bench, repository, body, content_type, env,
                                [int(w) for w in args.workers_list.split(",")], TARGET_CONCURRENCY,
                                args.duration, args.warmup, generator)

    if not args.no_naive:
        for key in models:
            bench = BENCHES[key]
            body, content_type = bodies[key]
            port = free_port()
            log(f"[naive] FastAPI + torch eager for {bench.name} on 127.0.0.1:{port}")
            naive = Server(f"naive-{bench.key}", [sys.executable, "-m", "benchmarks.naive_app", "--model-dir",
                                                  str(repository / bench.name), "--port", str(port)],
                           env, "/healthz", port)
            try:
                rows += measure_http(naive, bench, "naive", "torch eager", f"{naive.url}/predict", body,
                                     content_type, naive_concurrencies, args.duration, args.warmup, generator, None)
            finally:
                naive.stop()

    # The same raw points again: on a busy machine they drift, and every ratio drifts with them.
    drift = {}
    for key in models:
        again = measure_raw(BENCHES[key], repository, bodies[key][0], env, min(args.raw_duration, 2.0),
                            [1, best_raw(rows, key).extra["batch"]], quiet=True)
        first = {r.extra["batch"]: r.images_per_s for r in rows if r.model == key and r.system == "raw"}
        drift[key] = {r.extra["batch"]: (first[r.extra["batch"]], r.images_per_s) for r in again}
        log(f"[raw onnxruntime] {BENCHES[key].name} again at the end: " + ", ".join(
            f"batch {b}: {a:.1f} -> {c:.1f} images/s ({c / a - 1:+.0%})" for b, (a, c) in drift[key].items()))
    info["raw_drift"] = drift
    info["loadavg_end"] = os.getloadavg()
    log(f"measured in {time.monotonic() - began:.0f} s")
    targets = check_targets(rows, models)
    targets_14 = check_targets_14(rows, models, memory)
    text = markdown(rows, models, targets, info, args, settings_env, targets_14, memory)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"info": info, "rows": [r.__dict__ for r in rows], "memory": memory,
                                         "targets": [t.__dict__ for t in targets + targets_14]},
                                        indent=1, default=str))
    print(text)
    log(f"written to {args.out}")
    return 1 if args.strict and any(t.passed is False for t in targets + targets_14) else 0


if __name__ == "__main__":
    sys.exit(main())
