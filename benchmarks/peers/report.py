#!/usr/bin/env python3
"""The table of one same_run.sh run: every model, every server, and issue 23's targets.

  report.py RES_DIR [--json-out FILE]

Reads RES_DIR/meta.json and, per model, RES_DIR/<model>/{raw.json (raw_ort.py),
wrk_<system>_c<c>.json (post_png.lua + CPU accounting), meta_<system>.json, prepare.json,
reference.json, errors.txt}. Prints markdown.

img/s counts only answers that were 2xx AND carried the expected top-1 class, divided by
wrk's measured duration. p50 / p99 are wrk's per-request latencies (all answers). "best
peer" is the fastest peer that runs one model instance (LitServe with 2 workers runs two
and is shown, not ranked).
"""
import argparse
import glob
import json
import os
import re
import statistics

PREF = ["convscope", "convscope-spin", "convscope-nospin", "torchserve-onnx", "litserve-w1", "litserve-w2", "pytriton", "bentoml"]
MODEL_TITLES = {
    "alexnet": "AlexNet-224 (torchvision, 10 classes, ONNX 228 MB), 224x224 RGB PNG",
    "tinyvgg": "TinyVGG on digits (python -m model_export), 28x28 greyscale PNG",
}
# Issue 23's targets.
PEER_FACTOR = 1.1  # c=16: >= 1.1x the best peer (both models)
RAW_SHARE = 0.8  # AlexNet c=16: >= 0.8 of raw onnxruntime's best batch
LATENCY_SLACK_MS = 3.0  # AlexNet c=1: p50 <= raw batch-1 p50 + 3 ms


def load(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def instances(name):
    m = re.match(r"litserve-w(\d+)$", name)
    return int(m.group(1)) if m else 1


def ranked_peer(name):
    """A peer that runs one model instance (convscope's own variant rows are not peers)."""
    return not name.startswith("convscope") and instances(name) == 1


def label(name):
    if name == "convscope-spin":
        return "convscope-spin (CONVSCOPE_ORT_ALLOW_SPINNING=true; not ranked)"
    if name == "convscope-nospin":
        return "convscope-nospin (CONVSCOPE_ORT_ALLOW_SPINNING=false; not ranked)"
    return name if instances(name) == 1 else f"{name} ({instances(name)} model instances, not ranked)"


def bad(r):
    if not r:
        return 0
    return r["wrong_body"] + r["non2xx"] + r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]


def median_round(by_round):
    """Of one system's rounds at one concurrency, the result with the median images/s (the
    lower of the two middle ones for an even count)."""
    results = sorted(by_round.values(), key=lambda r: r["images_per_s"])
    return results[(len(results) - 1) // 2]


def round_ratios(rounds, system, peer, c=16):
    """convscope's images/s over ``peer``'s, round by round (the rounds both finished)."""
    ours, theirs = rounds.get(system, {}).get(c, {}), rounds.get(peer, {}).get(c, {})
    return [ours[k]["images_per_s"] / theirs[k]["images_per_s"]
            for k in sorted(set(ours) & set(theirs)) if theirs[k]["images_per_s"]]


def raw_rounds(d):
    """Raw onnxruntime's figures by round: raw.r<N>.json (a turn in every round), or the one
    raw.json measured before the systems as round 1 (as the wrk files are named)."""
    by_round = {}
    for p in glob.glob(os.path.join(d, "raw*.json")):
        m = re.match(r"raw(?:\.r(\d+))?\.json$", os.path.basename(p))
        if m:
            by_round[int(m.group(1) or 1)] = load(p, [])
    return by_round


def best_and_batch1(raw):
    """Of one raw measurement: the batch with the most images/s, and batch 1 (None if absent)."""
    best = max(raw, key=lambda r: r["images_per_s"], default=None)
    return best, next((r for r in raw if r["batch"] == 1), None)


def raw_median(by_round):
    """One raw entry per batch size: the round with the median images/s at that size."""
    sizes = sorted({r["batch"] for runs in by_round.values() for r in runs})
    return [median_round({k: r for k, runs in by_round.items() for r in runs if r["batch"] == b}) for b in sizes]


def raw_round_targets(s):
    """convscope against the raw figures of the same round: c=16 over raw's best batch, and
    c=1 p50 minus raw's batch-1 p50 (lists over the rounds both have)."""
    ours = s["rounds"].get("convscope", {})
    shares, slack = [], []
    for k, runs in sorted(s["raw_rounds"].items()):
        best, b1 = best_and_batch1(runs)
        if best and k in ours.get(16, {}):
            shares.append(ours[16][k]["images_per_s"] / best["images_per_s"])
        if b1 and k in ours.get(1, {}):
            slack.append(ours[1][k]["lat_p50_ms"] - b1["batch_p50_ms"])
    return shares, slack


def model_section(d, key):
    by_round = raw_rounds(d)
    raw = raw_median(by_round) if by_round else []
    prep = load(os.path.join(d, "prepare.json"), {})
    ref = load(os.path.join(d, "reference.json"), {})
    errors = []
    if os.path.exists(os.path.join(d, "errors.txt")):
        errors = [line.rstrip() for line in open(os.path.join(d, "errors.txt")) if line.strip()]
    best, b1 = best_and_batch1(raw)
    rounds = {}  # system -> concurrency -> round -> wrk result (round 1 when ROUNDS=1)
    for p in sorted(glob.glob(os.path.join(d, "wrk_*_c*.json"))):
        m = re.match(r"wrk_(.+)_c(\d+)(?:\.r(\d+))?\.json$", os.path.basename(p))
        if m:
            rounds.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[int(m.group(3) or 1)] = load(p)
    runs = {n: {c: median_round(by_round) for c, by_round in by_c.items()} for n, by_c in rounds.items()}
    order = sorted(runs, key=lambda n: (PREF.index(n) if n in PREF else 99, n))
    metas = {n: load(os.path.join(d, f"meta_{n}.json"), {}) for n in order}
    return {"key": key, "raw": raw, "raw_rounds": by_round, "raw_best": best, "raw_b1": b1, "prepare": prep, "reference": ref,
            "runs": runs, "rounds": rounds, "order": order, "systems": metas, "errors": errors}


def table(sections):
    hdr = ["model", "system", "c=1 img/s", "c=1 p50 ms", "c=16 img/s", "c=16 p50 ms", "c=16 p99 ms",
           "c=16 / raw best", "server CPU ms/img c=1 / c=16", "mean batch c=16", "load avg c=1 / c=16",
           "bad answers"]
    rows = []
    for s in sections:
        best, b1 = s["raw_best"], s["raw_b1"]
        if best:
            rounds = f"; median of {len(s['raw_rounds'])} rounds" if len(s["raw_rounds"]) > 1 else ""
            rows.append([s["key"], f"raw onnxruntime (c=1: batch 1, c=16: best, batch {best['batch']}{rounds})",
                         fmt(b1 and b1["images_per_s"]), fmt(b1 and b1["batch_p50_ms"], 2), fmt(best["images_per_s"]),
                         "-", "-", "1.00",
                         f"{fmt(b1 and b1.get('cpu_ms_per_image'), 2)} / {fmt(best.get('cpu_ms_per_image'), 2)}",
                         str(best["batch"]), "-", "-"])
        for n in s["order"]:
            r1, r16 = s["runs"][n].get(1), s["runs"][n].get(16)
            rows.append([
                s["key"], label(n),
                fmt(r1 and r1["images_per_s"]), fmt(r1 and r1["lat_p50_ms"], 2),
                fmt(r16 and r16["images_per_s"]), fmt(r16 and r16["lat_p50_ms"]), fmt(r16 and r16["lat_p99_ms"]),
                "-" if not (r16 and best) else f"{r16['images_per_s'] / best['images_per_s']:.2f}",
                f"{fmt(r1 and r1.get('server_cpu_ms_per_image'), 2)} / {fmt(r16 and r16.get('server_cpu_ms_per_image'), 2)}",
                fmt(r16 and r16.get("mean_batch"), 1),
                f"{fmt(r1 and r1.get('load_avg_1m'), 1)} / {fmt(r16 and r16.get('load_avg_1m'), 1)}",
                str(bad(r1) + bad(r16)),
            ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(hdr, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return out


def targets(sections):
    """Issue 23's targets, PASS/MISS, from this run's figures."""
    lines = []
    for s in sections:
        runs = s["runs"]
        cs = runs.get("convscope", {})
        peers = [n for n in s["order"] if ranked_peer(n)]

        def img16(n, runs=runs):
            return (runs.get(n, {}).get(16) or {}).get("images_per_s")

        best_peer = max(peers, key=lambda n: img16(n) or 0, default=None)
        c16 = img16("convscope")
        if c16 is not None and best_peer and img16(best_peer):
            ratio = c16 / img16(best_peer)
            lines.append(f"- {s['key']} c=16: convscope {c16:.1f} img/s = {ratio:.2f}x the best peer "
                         f"({best_peer}, {img16(best_peer):.1f}); target >= {PEER_FACTOR}x: "
                         f"{'PASS' if ratio >= PEER_FACTOR else 'MISS'}")
        paired = {n: round_ratios(s["rounds"], "convscope", n) for n in peers}
        if any(len(v) > 1 for v in paired.values()):
            for n, ratios in sorted(paired.items(), key=lambda kv: statistics.median(kv[1]) if kv[1] else 99):
                if not ratios:
                    continue
                median = statistics.median(ratios)
                ahead = sum(r > 1 for r in ratios)
                lines.append(f"- {s['key']} c=16, round by round against {n}: convscope / {n} median {median:.2f}x "
                             f"over {len(ratios)} rounds (per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
                             f"ahead in {ahead}/{len(ratios)}); target >= {PEER_FACTOR}x: "
                             f"{'PASS' if median >= PEER_FACTOR else 'MISS'}")
        if s["key"] == "alexnet" and c16 is not None and s["raw_best"]:
            share = c16 / s["raw_best"]["images_per_s"]
            lines.append(f"- alexnet c=16: {share:.2f} of raw onnxruntime's best batch "
                         f"({s['raw_best']['images_per_s']:.1f} img/s, batch {s['raw_best']['batch']}); "
                         f"target >= {RAW_SHARE}: {'PASS' if share >= RAW_SHARE else 'MISS'}")
        r1 = cs.get(1)
        if s["key"] == "alexnet" and r1 and s["raw_b1"]:
            limit = s["raw_b1"]["batch_p50_ms"] + LATENCY_SLACK_MS
            p50s = {n: (runs[n].get(1) or {}).get("lat_p50_ms") for n in s["order"]}
            others = [v for n, v in p50s.items() if not n.startswith("convscope") and v is not None]
            best_of_all = all(r1["lat_p50_ms"] <= v for v in others)
            lines.append(f"- alexnet c=1: convscope p50 {r1['lat_p50_ms']:.1f} ms vs raw batch-1 p50 "
                         f"{s['raw_b1']['batch_p50_ms']:.1f} + {LATENCY_SLACK_MS:g} ms = {limit:.1f} ms: "
                         f"{'PASS' if r1['lat_p50_ms'] <= limit else 'MISS'}")
            lines.append(f"- alexnet c=1: the lowest p50 of all servers: {'PASS' if best_of_all else 'MISS'}")
        if s["key"] == "alexnet" and len(s["raw_rounds"]) > 1:
            shares, slack = raw_round_targets(s)
            if shares:
                share = statistics.median(shares)
                lines.append(f"- alexnet c=16, round by round against raw onnxruntime's best batch of the same round: "
                             f"median {share:.2f} (per round: {', '.join(f'{v:.2f}' for v in shares)}); "
                             f"target >= {RAW_SHARE}: {'PASS' if share >= RAW_SHARE else 'MISS'}")
            if slack:
                over = statistics.median(slack)
                lines.append(f"- alexnet c=1, round by round: convscope p50 minus raw batch-1 p50 of the same round: "
                             f"median {over:+.2f} ms (per round: {', '.join(f'{v:+.2f}' for v in slack)}); "
                             f"target <= +{LATENCY_SLACK_MS:g} ms: {'PASS' if over <= LATENCY_SLACK_MS else 'MISS'}")
        r16 = cs.get(16)
        if r16:
            peer_cpu = ", ".join(f"{n} {(runs[n].get(16) or {}).get('server_cpu_ms_per_image')}" for n in peers)
            lines.append(f"- {s['key']} c=16: server CPU per request: convscope {r16.get('server_cpu_ms_per_image')} ms "
                         f"(mean batch {r16.get('mean_batch')}); peers: {peer_cpu}"
                         + (" (issue 23 measured ~2.2 ms for convscope before)" if s["key"] == "tinyvgg" else ""))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("res_dir")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    meta = load(os.path.join(args.res_dir, "meta.json"), {})
    keys = [k for k in (meta.get("models") or "").split() if os.path.isdir(os.path.join(args.res_dir, k))]
    sections = [model_section(os.path.join(args.res_dir, k), k) for k in keys]

    lines = [
        f"same_run {meta.get('stamp', '?')}: {meta.get('nproc', '?')} CPU cores ({meta.get('cpu', '?')}), "
        f"{meta.get('wrk', 'wrk')} -t{meta.get('wrk_threads', '?')} on the same cores as the server, "
        f"{meta.get('warmup_s', '?')}s warm-up + {meta.get('duration_s', '?')}s per point, "
        f"load average (1/5/15 min) {meta.get('load_avg_start', '?')} at the start, {meta.get('load_avg_end', '?')} at the end",
        f"batching: max batch {meta.get('max_batch', '?')} everywhere; peers' batch wait "
        f"{meta.get('batch_delay_ms', '?')} ms where they have one; peers' onnxruntime sessions: CPU EP, "
        f"{meta.get('peer_ort', '?')}",
    ]
    if (meta.get("rounds") or 1) > 1:
        lines.append(f"rounds: {meta['rounds']}, a fresh server each, the systems in order then in reverse; "
                     "each point is the round with the median images/s at that concurrency")
    for s in sections:
        ref, best = s["reference"], s["raw_best"]
        lines.append(f"- {s['key']}: {MODEL_TITLES.get(s['key'], s['key'])}, image {s['prepare'].get('png_bytes', '?')} B; "
                     f"reference top-1 class {ref.get('top1')} ({ref.get('label')}), logit margin {ref.get('margin', 0):.4f}"
                     + (f"; raw onnxruntime {best.get('ort_version', '?')}: "
                        + ", ".join(f"batch {r['batch']} {r['images_per_s']:.1f} img/s ({r.get('cpu_ms_per_image', '?')} "
                                    f"ms CPU/img)" for r in s["raw"]) if best else ""))
    lines.append("")
    lines += table(sections)
    lines.append("")
    lines.append("Targets (issue 23):")
    lines += targets(sections) or ["- (not enough figures)"]
    lines.append("")
    for s in sections:
        for n in s["order"]:
            m = s["systems"].get(n) or {}
            vs = ", ".join(f"{k} {val}" for k, val in (m.get("versions") or {}).items() if val)
            lines.append(f"- {s['key']} / {n}: {vs}; batching: {m.get('batching', '?')}; body: {m.get('body', '?')}")
    errs = [f"- {s['key']}: {e}" for s in sections for e in s["errors"]]
    if errs:
        lines += ["", "errors / skipped:", *errs]
    text = "\n".join(lines)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"meta": meta, "models": sections, "table": text}, f, indent=1)


if __name__ == "__main__":
    main()
