"""BentoML peer: the benchmark's ONNX model in a BentoML service with adaptive batching.

  PEER_ONNX=model.onnx PEER_SPEC=spec.json bentoml serve service:Classifier --host 127.0.0.1 --port 8005

POST /predict, multipart/form-data with one part "images" (the PNG, image/png): BentoML
parses JSON, multipart forms or its own pickle format, no raw body; image inputs are sent as
form files (its documented way). BentoML opens each part as a PIL image (lazy) while parsing
the request; the batched function decodes, preprocesses (common/ortpeer.py), runs one
onnxruntime batch and answers one {"predictions": [...]} per image, so each request's answer
is a one-element JSON list.

Adaptive batching: @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=
MAX_LATENCY_MS); BentoML's dispatcher picks the wait itself from observed latencies (there
is no fixed batch-wait knob). 1 worker process; access log off (the other servers log no
line per request either).
"""
import os
import sys

import bentoml
import numpy as np
from PIL.Image import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from ortpeer import load_session, prepare, top_k, zeros  # noqa: E402

MAX_BATCH = int(os.environ.get("MAX_BATCH", "16"))
MAX_LATENCY_MS = int(os.environ.get("MAX_LATENCY_MS", "1000"))


# access log off: the other servers write no line per request either
@bentoml.service(workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Classifier:
    def __init__(self) -> None:
        self.sess, self.input_name = load_session(os.environ["PEER_ONNX"])
        self.sess.run(None, {self.input_name: zeros(MAX_BATCH)})

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, images: list[Image]) -> list[dict]:
        x = np.stack([prepare(im) for im in images])
        logits = self.sess.run(None, {self.input_name: x})[0]
        return [{"predictions": top_k(row)} for row in logits]
