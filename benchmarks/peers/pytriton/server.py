#!/usr/bin/env python3
"""PyTriton peer: the benchmark's ONNX model bound into a real tritonserver (the one the
nvidia-pytriton wheel bundles, python backend) with Triton's dynamic batching.

  PEER_SPEC=spec.json python server.py --onnx model.onnx --http-port 8002 --grpc-port 8003 --metrics-port 8004 \
      [--max-batch-size 16] [--max-queue-delay-us 5000]

KServe v2 (Open Inference Protocol) over HTTP:
  POST /v2/models/<model>/infer   (<model>: --model-name, default the spec's name)
  input  "image"  BYTES, shape [-1, 1]  (one encoded PNG per batch row)
  output "top5_index" INT64 [-1, 5], "top5_probability" FP32 [-1, 5]
The client sends the PNG bytes with the binary tensor extension (JSON header +
Inference-Header-Content-Length + raw bytes, see make_body.py); decoding and preprocessing
(common/ortpeer.py) run in the @batch-decorated infer function, server side.

Path of a request: tritonserver HTTP -> dynamic batcher (max_batch_size, max queue delay) ->
python backend stub -> PyTriton proxy (shared memory + ZeroMQ) -> infer_fn in this process
(decode + preprocess each image, one onnxruntime run, softmax top-5) -> back the same way.
"""
import argparse
import logging
import os
import pathlib
import signal
import sys
import sysconfig

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from ortpeer import SPEC, TOP_K, load_session, preprocess, softmax, zeros  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--model-name", default=SPEC["model"])
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-queue-delay-us", type=int, default=5000)
    ap.add_argument("--workspace", help="PyTriton workspace (default: its own temp dir)")
    ap.add_argument("--log-verbose", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.log_verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # The python backend stub embeds libpython3.X.so.1.0 and then imports this interpreter's
    # standard library: without this it finds the distribution's libpython first (Debian
    # 12: 3.11.2), which fails against a newer 3.11 stdlib ("'_thread.RLock' object has no
    # attribute '_recursion_count'"). Put this interpreter's own libpython first.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED") and os.environ.get("PYTRITON_KEEP_LD_PATH") != "1":
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    sess, input_name = load_session(args.onnx)
    sess.run(None, {input_name: zeros(args.max_batch_size)})  # warm-up

    @batch
    def infer_fn(image):
        # image: (B, 1) array of encoded-image bytes
        x = np.stack([preprocess(bytes(row[0])) for row in image])
        logits = sess.run(None, {input_name: x})[0]
        probs = softmax(logits)
        idx = np.argsort(-probs, axis=1)[:, :TOP_K]
        return {
            "top5_index": idx.astype(np.int64),
            "top5_probability": np.take_along_axis(probs, idx, axis=1).astype(np.float32),
        }

    config = TritonConfig(
        http_address="127.0.0.1", http_port=args.http_port,
        grpc_address="127.0.0.1", grpc_port=args.grpc_port,
        metrics_address="127.0.0.1", metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        log_verbose=args.log_verbose,
    )
    kwargs = {"workspace": pathlib.Path(args.workspace)} if args.workspace else {}
    with Triton(config=config, **kwargs) as triton:
        triton.bind(
            model_name=args.model_name,
            infer_func=infer_fn,
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="top5_index", dtype=np.int64, shape=(TOP_K,)),
                Tensor(name="top5_probability", dtype=np.float32, shape=(TOP_K,)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        # SIGTERM -> the same clean stop as Ctrl-C (serve() stops tritonserver and the proxy
        # and removes the workspace); the default SIGTERM would leave tritonserver running.
        def on_term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        print(f"serving on http://127.0.0.1:{args.http_port}/v2/models/{args.model_name}/infer", flush=True)
        triton.serve()


if __name__ == "__main__":
    main()
