#!/usr/bin/env python3
"""Check one server answer against raw onnxruntime's top-1 and say what wrk must find in
every later answer.

  check_response.py --kind convscope|litserve|pytriton|torchserve|bentoml --top1 N --label L body.json

Exit 0 and print the WRK_EXPECT substring (present in this body, pinning top-1 = N) when the
answer's top-1 class is N; exit 1 with the reason otherwise.
"""
import argparse
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--kind", required=True)
ap.add_argument("--top1", type=int, required=True)
ap.add_argument("--label", help="the class's label (default classN)")
ap.add_argument("body")
args = ap.parse_args()
text = open(args.body, "rb").read().decode("utf-8", "replace")
try:
    doc = json.loads(text)
except ValueError as exc:
    sys.exit(f"{args.kind}: answer is not JSON ({exc}): {text[:300]!r}")

n = args.top1
label = json.dumps(args.label if args.label is not None else f"class{n}")
if args.kind == "bentoml" and isinstance(doc, list) and doc:
    doc = doc[0]  # a batchable API answers a list, one element per input
if args.kind in ("convscope", "litserve", "bentoml", "torchserve"):
    # {"predictions": [{"label": "classN", "index": N, "probability": p}, ...]} best first
    try:
        got = int(doc["predictions"][0]["index"])
    except (KeyError, IndexError, TypeError, ValueError):
        sys.exit(f"{args.kind}: no predictions[0].index in {text[:300]!r}")
    candidates = [f'"predictions":[{{"label":{label},"index":{n},',
                  f'"predictions": [{{"label": {label}, "index": {n},']
elif args.kind == "pytriton":
    outs = {o["name"]: o for o in doc.get("outputs", [])}
    try:
        got = int(outs["top5_index"]["data"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        sys.exit(f"pytriton: no top5_index output in {text[:300]!r}")
    candidates = [f'"name":"top5_index","datatype":"INT64","shape":[1,5],"data":[{n},']
else:
    sys.exit(f"unknown kind {args.kind}")

if got != n:
    sys.exit(f"{args.kind}: top-1 class {got} != raw onnxruntime's {n}: {text[:300]!r}")
expect = next((c for c in candidates if c in text), "")
if not expect:
    print(f"{args.kind}: top-1 ok but no fixed substring found; wrk will not check bodies", file=sys.stderr)
print(expect)
