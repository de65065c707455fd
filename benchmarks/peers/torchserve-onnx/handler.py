"""TorchServe custom handler: the benchmark's ONNX model on onnxruntime, the shared
preprocessing (ortpeer.py and the model's spec.json, packed into the archive with
--extra-files).

TorchServe's frontend batches requests (batch_size / max_batch_delay given at registration)
and hands handle() the list; each item's body is the raw PNG ("data" or "body"). Answer per
request: {"predictions": [{"label", "index", "probability"} x 5]}, as convscope's v1 answer.
"""
import json
import os

import numpy as np
from ortpeer import load_session, preprocess, top_k, zeros

_sess = None
_name = None


def _init(context):
    global _sess, _name
    model_dir = context.system_properties.get("model_dir")
    serialized = context.manifest["model"]["serializedFile"]
    _sess, _name = load_session(os.path.join(model_dir, serialized))
    _sess.run(None, {_name: zeros(1)})


def handle(data, context):
    if _sess is None:
        _init(context)
    if data is None:
        return None
    images = []
    for row in data:
        body = row.get("data") if row.get("data") is not None else row.get("body")
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        images.append(preprocess(body))
    logits = _sess.run(None, {_name: np.stack(images)})[0]
    return [json.dumps({"predictions": top_k(row)}, separators=(",", ":")) for row in logits]
