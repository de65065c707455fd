"""What every onnxruntime peer shares: the session, the preprocessing, the answer.

One module so that each peer server (LitServe, PyTriton, BentoML, TorchServe-ONNX) and the
reference computation run exactly the same code around the same ONNX file:

  decode the image with Pillow -> the model's mode (RGB or L) -> resize to the model's size
  (bilinear; a no-op for the benchmark's images, which already have it) ->
  (pixel * scale - mean) / std -> CHW float32; a batch is np.stack of those (NCHW). The
  arithmetic is convscope's own (service/preprocessing.py: one multiply by scale/std, then
  minus mean/std), so the tensors, and the logits, are bit-identical to what convscope
  feeds onnxruntime.

The model's recipe and labels come from a spec file (``PEER_SPEC`` in the environment, else
``spec.json`` next to this file, which is how TorchServe's archive carries it), written by
``prepare_alexnet.py`` / ``prepare_tinyvgg.py``:

  {"model": "alexnet10", "size": [224, 224], "channels": 3, "scale": 0.00392156862745098,
   "mean": [...], "std": [...], "labels": ["class0", ...]}

Without one: AlexNet's (224 px RGB, ImageNet mean/std, labels class0..class9).

The session is onnxruntime's CPU execution provider with default options (thread count,
spinning, optimisation level), what a plain `InferenceSession(path)` gives, unless
ORT_THREADS / ORT_ALLOW_SPINNING are set in the environment.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image

TOP_K = 5
_DEFAULT = {
    "model": "alexnet10", "size": [224, 224], "channels": 3, "scale": 1.0 / 255.0,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
    "labels": [f"class{i}" for i in range(10)],
}


def _load_spec() -> dict:
    path = os.environ.get("PEER_SPEC") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.json")
    if os.path.exists(path):
        with open(path) as f:
            return {**_DEFAULT, **json.load(f)}
    return dict(_DEFAULT)


SPEC = _load_spec()
HEIGHT, WIDTH = (int(v) for v in SPEC["size"])
CHANNELS = int(SPEC["channels"])
MODE = "L" if CHANNELS == 1 else "RGB"
LABELS = [str(v) for v in SPEC["labels"]]
_STD = np.asarray(SPEC["std"], dtype=np.float32).reshape(CHANNELS, 1, 1)
_MEAN = np.asarray(SPEC["mean"], dtype=np.float32).reshape(CHANNELS, 1, 1)
_MUL = float(SPEC["scale"]) / _STD
_SUB = _MEAN / _STD


def load_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    threads = int(os.environ.get("ORT_THREADS", "0") or 0)
    if threads:
        so.intra_op_num_threads = threads
    spin = os.environ.get("ORT_ALLOW_SPINNING", "")
    if spin in ("0", "1"):
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess, sess.get_inputs()[0].name


def zeros(batch: int) -> np.ndarray:
    """A batch of blank inputs, for a warm-up run."""
    return np.zeros((batch, CHANNELS, HEIGHT, WIDTH), np.float32)


def preprocess(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (C, H, W) float32."""
    return prepare(Image.open(io.BytesIO(data)))


def prepare(image: Image.Image) -> np.ndarray:
    """An opened (lazy) PIL image -> (C, H, W) float32: decode, mode, resize, normalise."""
    image.load()
    if image.mode != MODE:
        image = image.convert(MODE)
    if image.size != (WIDTH, HEIGHT):
        image = image.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    pixels = np.asarray(image)
    chw = pixels[None, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, _MUL, out=out, casting="unsafe")
    out -= _SUB
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits_row: np.ndarray, k: int = TOP_K) -> list[dict]:
    """One image's logits -> [{"label", "index", "probability"}, ...], best first (the shape
    of convscope's v1 "predictions")."""
    probs = softmax(logits_row.astype(np.float64))
    order = np.argsort(-probs)[:k]
    return [{"label": LABELS[int(i)], "index": int(i), "probability": round(float(probs[i]), 6)} for i in order]
