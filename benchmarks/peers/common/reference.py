#!/usr/bin/env python3
"""Raw onnxruntime's answer for one image: the reference every server's answer must match.

  PEER_SPEC=spec.json reference.py --onnx model.onnx --png input.png
    ->  {"top1": 3, "label": "class3", "top5": [...], "margin": ...}

`margin` is the gap between the best and second-best logit: a tiny margin would make the
top-1 check sensitive to batch-size-dependent rounding (checked at batch 16 too).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ortpeer import LABELS, load_session, preprocess, top_k  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--onnx", required=True)
ap.add_argument("--png", required=True)
args = ap.parse_args()
sess, name = load_session(args.onnx)
with open(args.png, "rb") as f:
    x = preprocess(f.read())[None]
logits = sess.run(None, {name: x})[0][0]
b16 = sess.run(None, {name: np.repeat(x, 16, axis=0)})[0]
srt = np.sort(logits)
top1 = int(np.argmax(logits))
print(json.dumps({
    "top1": top1,
    "label": LABELS[top1],
    "top5": top_k(logits),
    "margin": float(srt[-1] - srt[-2]),
    "batch16_top1_all_same": bool((b16.argmax(axis=1) == top1).all()),
    "batch16_max_abs_diff": float(np.abs(b16 - logits).max()),
}))
