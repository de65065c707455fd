#!/usr/bin/env python3
"""The peers' preprocessing recipe and labels, read from convscope's artifact for the model,
so that every server normalises and names classes exactly as convscope does.

  spec.py ARTIFACT_DIR OUT.json   (ARTIFACT_DIR: models/<name>/<version>/ with metadata.json)

Writes {"model", "size", "channels", "scale", "mean", "std", "labels"}: what
common/ortpeer.py reads (PEER_SPEC).
"""
import json
import os
import sys

artifact, out = sys.argv[1], sys.argv[2]
with open(os.path.join(artifact, "metadata.json")) as f:
    meta = json.load(f)
inp = meta["input"]
if str(inp.get("resize", "bilinear")).lower() != "bilinear":
    sys.exit(f"spec.py: the peers resize bilinearly; this model records {inp.get('resize')!r}")
spec = {
    "model": meta["name"],
    "size": [int(v) for v in inp["size"]],
    "channels": int(inp["channels"]),
    "scale": float(inp["scale"]),
    "mean": [float(v) for v in inp["mean"]],
    "std": [float(v) for v in inp["std"]],
    "labels": [str(v) for v in meta["labels"]],
}
with open(out, "w") as f:
    json.dump(spec, f)
print(json.dumps(spec))
