#!/usr/bin/env python3
"""LitServe peer: the benchmark's ONNX model behind a LitAPI with LitServe's own batching.

  PEER_SPEC=spec.json python server.py --onnx model.onnx --port 8001 [--workers-per-device 1] \
      [--max-batch-size 16] [--batch-timeout 0.005]

POST /predict  body: JSON {"image": "<base64 of the encoded image>"}  (Content-Type
application/json). LitServe hands decode_request the parsed JSON body (or a form, which
needs python-multipart, not installed); it has no raw-bytes body, so base64 JSON is the most
direct way to send it an image. Answer: {"predictions": [{"label", "index",
"probability"} x 5]}, the shape of convscope's v1 answer.

LitServe runs, per worker (workers_per_device of them, accelerator cpu, 1 device), an
inference loop that pulls up to max_batch_size requests (waiting at most batch_timeout for
them), calls decode_request on each (base64 + PNG decode + preprocessing, see
common/ortpeer.py), batch (np.stack), predict (one onnxruntime run), unbatch, and
encode_response on each. num_api_servers is LitServe's default (= number of workers).
"""
import argparse
import base64
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import litserve as ls  # noqa: E402
from ortpeer import load_session, preprocess, top_k, zeros  # noqa: E402


class ClassifierAPI(ls.LitAPI):
    def __init__(self, onnx_path, **kwargs):
        super().__init__(**kwargs)
        self.onnx_path = onnx_path

    def setup(self, device):
        self.sess, self.input_name = load_session(self.onnx_path)
        # one warm-up run at the largest batch so the first request does not pay for it
        self.sess.run(None, {self.input_name: zeros(self.max_batch_size)})

    def decode_request(self, request):
        return preprocess(base64.b64decode(request["image"]))

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        return self.sess.run(None, {self.input_name: x})[0]

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"predictions": top_k(output)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers-per-device", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-timeout", type=float, default=0.005)
    args = ap.parse_args()
    api = ClassifierAPI(args.onnx, max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers_per_device)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
