#!/usr/bin/env python3
"""The AlexNet row's model and image, offline and deterministic (same_run.sh, MODELS=alexnet).

  prepare_alexnet.py OUT_DIR

Writes into OUT_DIR:
  model.onnx      torchvision AlexNet(num_classes=10), seeded random init (no download),
                  torch.onnx.export(dynamo=True, external_data=False), dynamic batch
                  dimension, class output "logits" only: what every peer loads; convscope
                  imports the same file (model_export import)
  input.png       a 224x224 RGB PNG (deterministic synthetic picture, ~103 kB)
  prepare.json    sizes, parity of ORT vs torch, versions

Speed does not depend on the weights, so untrained ones do; the answer check still pins
the top-1 class every server must give for this PNG (common/reference.py).
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image
from torchvision.models.alexnet import AlexNet

NUM_CLASSES = 10


def make_png(path: str, size: int = 224, seed: int = 0) -> None:
    """A smooth colour field with blobs and mild noise: compresses like a photo-ish image,
    not like pure noise (which would inflate PNG decode cost)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack(
        [
            0.5 + 0.5 * np.sin(6.0 * x + 2.0 * y),
            0.5 + 0.5 * np.cos(4.0 * y - 3.0 * x),
            0.5 + 0.5 * np.sin(5.0 * (x * y) + 1.0),
        ],
        axis=-1,
    )
    for _ in range(6):
        cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        img[mask] = rng.uniform(0, 1, size=3)
    img += rng.normal(0, 0.03, size=img.shape)
    arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(arr, mode="RGB").save(path, format="PNG")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    info = {"torch": torch.__version__}

    torch.manual_seed(args.seed)
    model = AlexNet(num_classes=NUM_CLASSES).eval()
    info["model"] = "alexnet10"
    info["params"] = sum(p.numel() for p in model.parameters())

    onnx_path = os.path.join(args.out_dir, "model.onnx")
    example = torch.randn(2, 3, args.size, args.size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    t0 = time.perf_counter()
    torch.onnx.export(
        model,
        (example,),
        onnx_path,
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
    )
    info["onnx_export_s"] = round(time.perf_counter() - t0, 2)
    info["onnx_bytes"] = os.path.getsize(onnx_path)
    if os.path.exists(onnx_path + ".data"):
        raise SystemExit("ONNX export wrote external data; expected a single file")

    import onnxruntime as ort

    info["onnxruntime"] = ort.__version__
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    info["onnx_input"] = {"name": inp.name, "shape": [str(d) for d in inp.shape]}
    worst = 0.0
    with torch.inference_mode():
        for b in (1, 3, 16):
            x = torch.randn(b, 3, args.size, args.size)
            ref = model(x).numpy()
            got = sess.run(None, {inp.name: x.numpy()})[0]
            if got.shape != ref.shape:
                raise SystemExit(f"ORT shape {got.shape} != torch {ref.shape} at batch {b}")
            worst = max(worst, float(np.abs(got - ref).max()))
    info["ort_vs_torch_max_abs_diff"] = worst
    if worst > 1e-3:
        raise SystemExit(f"ORT/torch parity failed: max abs diff {worst}")

    png = os.path.join(args.out_dir, "input.png")
    make_png(png, args.size, args.seed)
    info["png_bytes"] = os.path.getsize(png)
    with open(os.path.join(args.out_dir, "prepare.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
