"""Where each millisecond of a served image goes, under load (issue 23).

Starts ``python -m service`` on a model repository, drives it with wrk (closed loop, the
same body on every request, every answer checked for the expected substring), and while it
runs:

1. samples every Python thread with py-spy (``record --threads --native --format raw``)
   and reads each thread's CPU time from /proc, so that each thread's CPU is split into
   stages by what its busy stacks were doing (the event loop: HTTP, routing, auth,
   middleware, body, batcher, encoding, garbage collection, ...; the decode pool: decode
   and preprocess; the model thread: onnxruntime; onnxruntime's own threads, which py-spy
   cannot see: onnxruntime). Samples waiting (epoll, a condition, a semaphore, the GIL)
   are dropped: py-spy counts a thread blocked in a futex as active;
2. records a second stretch as a flame graph (SVG, ``--threads``) to look at.

Prints a table of CPU ms per image per stage and writes it, the raw stacks, the SVG and a
JSON summary under ``--out`` (default benchmarks/out/profiles/, git-ignored).

    python -m benchmarks.profile_load --repository MODELS --model alexnet10 \\
        --body input.png --content-type image/png -c 16 --label alexnet-c16

Needs wrk and py-spy (pip install py-spy; root or ptrace permission to read the process).
Absolute figures follow the machine's load (printed); the shares are what to read.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks import served
from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "benchmarks" / "peers" / "post_png.lua"

# Stages: a sample belongs to the stage of the leaf-most frame of its stack that one of these
# patterns names (libraries such as PIL, numpy or orjson name none, so their time goes to the
# project code that called them). Frames read "function (package/file.py:line)".
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("garbage collection", ("gc_collect", "(gcmodule.c")),
    ("read/write syscalls (sockets, wake-up pipes)", ("write (libc", "read (libc", "writev (libc", "sendmsg (libc",
                                                     "recv (libc", "send (libc")),
    ("onnxruntime run", ("(service/models/runtime.py", "onnxruntime/")),
    ("image headers + decode budget (admit)", ("open_checked (", "reduce_on_decode (", "decode_cost (", "admit (",
                                               "_reserve (", "(service/inference/image_preparation.py:")),
    ("decode + preprocess (pixels)", ("(service/inference/preprocessing.py", "_finish (service/inference/image_prep")),
    ("answer: softmax, top-k, dict (codec)", ("(service/codecs/v1.py", "(service/models/scores.py")),
    ("answer: JSON render (orjson)", ("(service/http/responses.py",)),
    ("metrics (middleware, prometheus)", ("prometheus_client/", "(service/metrics.py", "(service/app.py")),
    ("auth", ("(service/http/auth.py",)),
    ("drain / in-flight middleware", ("(service/http/drain.py",)),
    ("client-gone watcher (unless_client_gone)", ("unless_client_gone (", "_disconnected (")),
    ("body read (request reader)", ("(service/http/requests.py",)),
    ("route table wrapper (routes/table.py)", ("(service/routes/table.py",)),
    ("route (routes/, deps, timings header)", ("(service/routes/",)),
    ("handler (handlers/)", ("(service/handlers/",)),
    ("batcher (queue, concat, futures)", ("(service/inference/batching.py",)),
    ("data plane (finite check, offload)", ("(service/inference/dataplane.py", "(service/inference/workers.py")),
    ("registry lease", ("(service/models/registry.py",)),
    ("FastAPI: params, validation, deps", ("fastapi/dependencies", "fastapi/_compat", "pydantic")),
    ("FastAPI/Starlette routing + response", ("fastapi/", "starlette/")),
    ("uvicorn HTTP protocol (httptools)", ("uvicorn/", "(service/http/limits.py", "httptools")),
    ("asyncio loop, sockets", ("asyncio/", "uvloop", "selectors.py", "socket.py")),
    ("thread pool hand-off (futures, anyio, wake-ups)", ("concurrent/futures", "threading.py", "queue.py", "anyio/",
                                                        "call_soon_threadsafe", "run_in_executor")),
]
OTHER = "other Python"
# A sample whose last frames hold one of these is a thread waiting, not working.
IDLE = ("epoll_wait", "epoll_pwait", "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait", "sem_timedwait",
        "sem_clockwait", "do_futex_wait", "futex_abstimed_wait", "take_gil", "PyThread_acquire_lock", "poll (libc",
        "select (libc", "nanosleep")
ORT_NATIVE = "onnxruntime (its own threads, invisible to py-spy)"
# The event loop's CPU under a frame, whatever it calls (a stage above counts only the
# leaf-most named frame): what a layer of the request path costs in all.
INCLUSIVE: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (what, frames any of which puts a sample under it, frames any of which keeps it out)
    ("HTTP protocol: bytes in, parse, request cycle set-up", ("HttpToolsProtocol.data_received (",), ()),
    ("FastAPI route (dependencies + endpoint + response)", ("request_response.<locals>.app.<locals>.app (",), ()),
    ("FastAPI dependency solving (params, validation, deps)", ("solve_dependencies (fastapi",), ()),
    ("direct route plan (params, deps) and all under it", ("Plan.run (service/routes/direct.py",), ()),
    ("route table wrapper and all under it", ("_bind.<locals>.endpoint (service/routes/table.py",), ()),
    ("request reader: body read", ("RequestReader.images (", "read_body (service/http"), ()),
    # The watcher task and asyncio.wait; not the work it awaits, which (since the protocol's
    # hang-up notice) runs inside unless_client_gone.
    ("client-gone watcher (task, wait, cancel)", ("unless_client_gone (", "_disconnected (", "_watching ("),
     ("(service/handlers/",)),
    ("handler (predict / infer) and all under it", ("(service/handlers/",), ()),
    ("data plane run (admit, decode, batcher, check)", ("DataPlane.run (",), ()),
    ("answer render (codec + orjson)", ("predictions (service/codecs/v1.py", "FastJSONResponse.render ("), ()),
    ("response send (headers + body, socket writes)", ("Response.__call__ (starlette/responses.py",), ()),
    ("socket write syscalls", ("write (libc", "writev (libc"), ()),
    ("garbage collection", ("gc_collect",), ()),
]


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of every thread of ``pid``."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / hz
    return out


def thread_names(pid: int, py_spy: str) -> dict[int, str]:
    """Python thread names by native thread id (py-spy dump)."""
    text = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'Thread (\d+) \([^)]*\): "([^"]*)"', text)}


def role(tid: int, pid: int, names: dict[int, str]) -> str:
    if tid == pid:
        return "event loop"
    name = names.get(tid)
    if name is None:
        return "onnxruntime threads"  # not a Python thread: onnxruntime's intra-op pool
    if name.startswith("ort-"):
        return "model thread (onnxruntime run)"
    if name.startswith("preprocess"):
        return "decode pool"
    if name.startswith("parse"):
        return "parse thread"
    return f"other thread ({re.sub(r'_[0-9]+$', '', name)})"


def stage_of(frames: list[str]) -> str:
    """The stage of the leaf-most frame (collapsed stacks run root first) that a pattern names."""
    for frame in reversed(frames):
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    return OTHER


def parse_raw(path: Path) -> tuple[dict[int, collections.Counter[str]], dict[int, collections.Counter[str]]]:
    """py-spy raw (collapsed) stacks recorded with --threads -> stage counts per thread id,
    and per thread id the busy samples under each INCLUSIVE frame (key "(busy)": all)."""
    by_thread: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    under: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        m = re.match(r"thread \((0x[0-9A-Fa-f]+|\d+)\)", frames[0])
        tid = int(m.group(1), 0) if m else -1
        if any(idle in frame for frame in frames[-4:] for idle in IDLE):
            by_thread[tid]["(idle)"] += int(count)
            continue
        by_thread[tid][stage_of(frames[1:])] += int(count)
        under[tid]["(busy)"] += int(count)
        for name, patterns, unless in INCLUSIVE:
            if (any(p in frame for frame in frames[1:] for p in patterns)
                    and not any(p in frame for frame in frames[1:] for p in unless)):
                under[tid][name] += int(count)
    return by_thread, under


def counts(url: str) -> tuple[float, float]:
    """Images inferred and onnxruntime runs so far (/metrics)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    images = sum(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("convscope_inference_count_total"))
    runs = sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("convscope_inference_exec_count_total"))
    return images, runs


def wrk(url: str, body: Path, content_type: str, expect: str, concurrency: int, seconds: int,
        out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WRK_BODY": str(body), "WRK_CT": content_type, "WRK_EXPECT": expect, "WRK_OUT": str(out)}
    threads = min(2, concurrency)
    return subprocess.Popen(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
                             "-s", str(LUA), url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    served.add_arguments(ap)
    ap.add_argument("-c", "--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=int, default=15, help="seconds of each recording")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--label", required=True, help="name of the outputs, e.g. alexnet-c16")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server, repeatable")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "profiles")
    ap.add_argument("--no-svg", action="store_true", help="skip the flame graph's second stretch")
    args = ap.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "CONVSCOPE_MODEL_REPOSITORY": str(args.repository), "CONVSCOPE_MAX_BATCH_SIZE": "16",
           "CONVSCOPE_LOG_LEVEL": "warning"}
    env.update(kv.split("=", 1) for kv in args.env)
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with ServerProcess(cmd, port=port, log=args.out / f"{args.label}.server.log", env=env, cwd=ROOT,
                       timeout=300) as server:
        url = f"{server.url}/v1/models/{args.model}/predict"
        warm = wrk(url, args.body, args.content_type, args.expect, args.concurrency, args.warmup,
                   args.out / f"{args.label}.warm.json")
        warm.wait()
        names = thread_names(server.pid, py_spy)
        raw = args.out / f"{args.label}.raw.txt"
        load_before = os.getloadavg()
        images0, runs0 = counts(server.url)
        cpu0, wall0 = thread_cpu(server.pid), time.perf_counter()
        load = wrk(url, args.body, args.content_type, args.expect, args.concurrency, args.duration,
                   args.out / f"{args.label}.wrk.json")
        spy = subprocess.run([py_spy, "record", "--pid", str(server.pid), "--threads", "--native", "--format", "raw",
                              "--rate", str(args.rate), "--duration", str(args.duration), "-o", str(raw)],
                             capture_output=True, text=True)
        load.wait()
        cpu1, wall = thread_cpu(server.pid), time.perf_counter() - wall0
        images1, runs1 = counts(server.url)
        if not args.no_svg:
            load = wrk(url, args.body, args.content_type, args.expect, args.concurrency, args.duration, Path(os.devnull))
            subprocess.run([py_spy, "record", "--pid", str(server.pid), "--threads", "--rate", str(args.rate),
                            "--duration", str(args.duration), "-o", str(args.out / f"{args.label}.svg")],
                           capture_output=True, text=True)
            load.wait()
    if spy.returncode != 0:
        print(spy.stderr, file=sys.stderr)
        return 1
    result = json.loads((args.out / f"{args.label}.wrk.json").read_text())
    images = images1 - images0
    stacks, under = parse_raw(raw)
    summary = breakdown(stacks, cpu0, cpu1, names, server.pid, images)
    summary["event_loop_inclusive_ms"] = inclusive(under.get(server.pid), cpu0, cpu1, server.pid, images)
    summary.update(label=args.label, model=args.model, concurrency=args.concurrency, seconds=round(wall, 2),
                   images=images, mean_batch=round(images / max(runs1 - runs0, 1), 2),
                   images_per_s=round(result["ok"] / result["duration_s"], 2), wrong=result["wrong_body"],
                   non2xx=result["non2xx"], p50_ms=result["lat_p50_ms"], p99_ms=result["lat_p99_ms"],
                   load_avg_before=[round(v, 2) for v in load_before],
                   load_avg_after=[round(v, 2) for v in os.getloadavg()], env=args.env)
    (args.out / f"{args.label}.json").write_text(json.dumps(summary, indent=1))
    text = render(summary)
    (args.out / f"{args.label}.md").write_text(text + "\n")
    print(text)
    return 0


def breakdown(stacks: dict[int, collections.Counter[str]], cpu0: dict[int, float], cpu1: dict[int, float],
              names: dict[int, str], pid: int, images: float) -> dict[str, object]:
    """CPU ms per image, by thread role and stage: each thread's CPU time split in the
    proportions of its py-spy samples (all of it to onnxruntime for non-Python threads)."""
    per_stage: collections.Counter[str] = collections.Counter()
    per_role: collections.Counter[str] = collections.Counter()
    role_stages: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for tid, end in cpu1.items():
        spent = end - cpu0.get(tid, 0.0)
        if spent <= 0:
            continue
        r = role(tid, pid, names)
        per_role[r] += spent
        samples = stacks.get(tid)
        if r == "onnxruntime threads" or not samples:
            stage_split = {ORT_NATIVE if r == "onnxruntime threads" else f"{r} (no samples)": 1.0}
        else:
            busy = {stage: n for stage, n in samples.items() if stage != "(idle)"}
            total = sum(busy.values())
            stage_split = {stage: n / total for stage, n in busy.items()} if total else {f"{r} (only idle samples)": 1.0}
        for stage, share in stage_split.items():
            per_stage[stage] += spent * share
            role_stages[r][stage] += spent * share
    ms = 1000.0 / max(images, 1)
    return {
        "cpu_ms_per_image": round(sum(per_role.values()) * ms, 3),
        "by_role_ms": {r: round(v * ms, 3) for r, v in per_role.most_common()},
        "by_stage_ms": {s: round(v * ms, 3) for s, v in per_stage.most_common()},
        "by_role_stage_ms": {r: {s: round(v * ms, 3) for s, v in c.most_common()} for r, c in role_stages.items()},
    }


def inclusive(under: collections.Counter[str] | None, cpu0: dict[int, float], cpu1: dict[int, float], pid: int,
              images: float) -> dict[str, float]:
    """The event loop's CPU ms per image under each INCLUSIVE frame (its CPU split by its
    busy samples; layers nest, so these do not add up)."""
    if not under or not under["(busy)"]:
        return {}
    spent = (cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)) * 1000.0 / max(images, 1)
    return {name: round(spent * under[name] / under["(busy)"], 3) for name, _, _ in INCLUSIVE}


def render(s: dict[str, object]) -> str:
    lines = [f"{s['label']}: {s['images_per_s']} img/s, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, mean batch "
             f"{s['mean_batch']}, wrong {s['wrong']}, non-2xx {s['non2xx']}; server CPU {s['cpu_ms_per_image']} ms "
             f"per image; load average {s['load_avg_before']} -> {s['load_avg_after']}", "",
             "| thread | stage | CPU ms / image |", "|---|---|---|"]
    by_role = s["by_role_ms"]
    assert isinstance(by_role, dict)
    stages = s["by_role_stage_ms"]
    assert isinstance(stages, dict)
    for r, total in by_role.items():
        lines.append(f"| **{r}** | (all) | **{total}** |")
        for stage, v in stages.get(r, {}).items():
            if v >= 0.005:
                lines.append(f"| | {stage} | {v} |")
    lines += ["", "| stage (all threads) | CPU ms / image |", "|---|---|"]
    by_stage = s["by_stage_ms"]
    assert isinstance(by_stage, dict)
    lines += [f"| {stage} | {v} |" for stage, v in by_stage.items() if v >= 0.005]
    nested = s.get("event_loop_inclusive_ms")
    if isinstance(nested, dict) and nested:
        lines += ["", "| event loop, under this frame (nested, do not add up) | CPU ms / image |", "|---|---|"]
        lines += [f"| {name} | {v} |" for name, v in nested.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
