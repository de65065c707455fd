"""Interleaved A/B of two convscope servers (two checkouts, or two sets of settings) under
the same wrk load, for changes whose effect is smaller than the machine's drift.

    python -m benchmarks.ab --repository MODELS --model alexnet10 --body input.png \\
        --a-dir /path/to/base-checkout --b-dir . -c 16 -c 1 --rounds 3

Each round starts A fresh, measures every concurrency (a warm-up run, then a measured run),
stops it, then does the same for B; rounds alternate A,B,B,A,A,B,... so a slow stretch of
the machine hits both, and neither always goes second. ``--a-env`` / ``--b-env KEY=VALUE`` give one side its own settings (the
same checkout twice compares settings). Every answer is checked for ``--expect``.

Prints one line per server and concurrency per round, then per concurrency the median of
images/s, p50 and server CPU per image for each side, and B/A. Writes the rows as JSON
(``--json``). Server CPU per image (the server's process CPU / answered images) moves far
less with the machine's load than images/s does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from benchmarks import served
from service.testing import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "benchmarks" / "peers" / "post_png.lua"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def batch_counts(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    lines = text.splitlines()
    images = sum(float(x.split()[-1]) for x in lines if x.startswith("convscope_inference_count_total"))
    runs = sum(float(x.split()[-1]) for x in lines if x.startswith("convscope_inference_exec_count_total"))
    return images, runs


def run_wrk(url: str, args: argparse.Namespace, concurrency: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "WRK_BODY": str(args.body), "WRK_CT": args.content_type, "WRK_EXPECT": args.expect,
               "WRK_OUT": out.name}
        subprocess.run(["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
                        "-s", str(LUA), url], env=env, check=True, capture_output=True, timeout=seconds + 60)
        result: dict[str, float] = json.loads(Path(out.name).read_text())
        return result


def measure(side: str, checkout: Path, extra_env: list[str], args: argparse.Namespace, round_no: int) -> list[dict]:
    port = free_port()
    env = {**os.environ, "CONVSCOPE_MODEL_REPOSITORY": str(args.repository), "CONVSCOPE_LOG_LEVEL": "warning",
           "CONVSCOPE_MAX_BATCH_SIZE": str(args.max_batch)}
    env.update(kv.split("=", 1) for kv in extra_env)
    rows = []
    log = ROOT / "benchmarks" / "out" / "ab" / f"{side}.log"
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    with ServerProcess(cmd, port=port, log=log, env=env, cwd=checkout, timeout=300) as server:
        url = f"{server.url}/v1/models/{args.model}/predict"
        for c in args.concurrency:
            run_wrk(url, args, c, args.warmup)
            i0, r0 = batch_counts(server.url)
            cpu0 = cpu_seconds(server.pid)
            w = run_wrk(url, args, c, args.duration)
            cpu1 = cpu_seconds(server.pid)
            i1, r1 = batch_counts(server.url)
            ips = w["ok"] / w["duration_s"]
            per_image = 1000 / max(w["ok"], 1)
            rows.append({
                "side": side, "round": round_no, "concurrency": c, "images_per_s": round(ips, 2),
                "p50_ms": w["lat_p50_ms"], "p99_ms": w["lat_p99_ms"],
                "cpu_ms_per_image": round((sum(cpu1) - sum(cpu0)) * per_image, 3),
                "sys_ms_per_image": round((cpu1[1] - cpu0[1]) * per_image, 3),
                "mean_batch": round((i1 - i0) / max(r1 - r0, 1), 2),
                "bad": w["wrong_body"] + w["non2xx"] + w["err_timeout"],
                "load_1m": round(os.getloadavg()[0], 2),
            })
            r = rows[-1]
            print(f"round {round_no} {side} c={c}: {r['images_per_s']} img/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"CPU {r['cpu_ms_per_image']} ms/img (sys {r['sys_ms_per_image']}), mean batch {r['mean_batch']}, bad {r['bad']}, "
                  f"load {r['load_1m']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    served.add_arguments(ap)
    ap.add_argument("--a-dir", type=Path, required=True, help="checkout that serves A")
    ap.add_argument("--b-dir", type=Path, default=ROOT, help="checkout that serves B (default: this one)")
    ap.add_argument("--a-env", action="append", default=[], help="KEY=VALUE for A, repeatable")
    ap.add_argument("--b-env", action="append", default=[], help="KEY=VALUE for B, repeatable")
    ap.add_argument("-c", "--concurrency", type=int, action="append")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.concurrency = args.concurrency or [16]
    args.repository, args.body = args.repository.resolve(), args.body.resolve()
    rows: list[dict] = []
    print(f"A = {args.a_dir} {' '.join(args.a_env)}\nB = {args.b_dir} {' '.join(args.b_env)}", flush=True)
    sides = {"A": (args.a_dir, args.a_env), "B": (args.b_dir, args.b_env)}
    for n in range(1, args.rounds + 1):
        # A,B then B,A: the one measured second in a round (after a server stopped, later in
        # a drifting stretch) is not always the same one.
        for side in ("AB" if n % 2 else "BA"):
            rows += measure(side, *sides[side], args, n)
    print()
    for c in args.concurrency:
        med = {}
        for side in "AB":
            mine = [r for r in rows if r["side"] == side and r["concurrency"] == c]
            med[side] = {k: statistics.median(r[k] for r in mine)
                         for k in ("images_per_s", "p50_ms", "cpu_ms_per_image", "sys_ms_per_image", "mean_batch")}
        a, b = med["A"], med["B"]
        print(f"c={c} medians over {args.rounds} rounds: A {a['images_per_s']:.1f} img/s, p50 {a['p50_ms']:.2f} ms, "
              f"CPU {a['cpu_ms_per_image']:.3f} ms/img (sys {a['sys_ms_per_image']:.3f}), batch {a['mean_batch']:.1f} | "
              f"B {b['images_per_s']:.1f} img/s, p50 {b['p50_ms']:.2f} ms, CPU {b['cpu_ms_per_image']:.3f} ms/img "
              f"(sys {b['sys_ms_per_image']:.3f}), batch {b['mean_batch']:.1f} | "
              f"B/A img/s {b['images_per_s'] / a['images_per_s']:.3f}, p50 {b['p50_ms'] / a['p50_ms']:.3f}, "
              f"CPU {b['cpu_ms_per_image'] / a['cpu_ms_per_image']:.3f}")
        pairs = [(ra, rb) for ra in rows for rb in rows if ra["concurrency"] == rb["concurrency"] == c
                 and ra["side"] == "A" and rb["side"] == "B" and ra["round"] == rb["round"]]
        loads = [r["load_1m"] for r in rows if r["concurrency"] == c]
        print(f"c={c} per round: B faster in {sum(rb['images_per_s'] > ra['images_per_s'] for ra, rb in pairs)}"
              f"/{len(pairs)}, B less CPU per image in "
              f"{sum(rb['cpu_ms_per_image'] < ra['cpu_ms_per_image'] for ra, rb in pairs)}/{len(pairs)}; "
              f"load average {min(loads):.1f}-{max(loads):.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
