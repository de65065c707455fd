#!/usr/bin/env python3
"""The TinyVGG row's model and image (same_run.sh, MODELS=tinyvgg), offline.

  prepare_tinyvgg.py OUT_DIR      (run with the project's python from the project root)

Writes into OUT_DIR:
  models/digits-tinyvgg/1/  the project's own export: `python -m model_export` (TinyVGG
                  trained on scikit-learn's digits, seeded), which convscope serves as is
  model.onnx      that artifact's graph with its class output "logits" alone: what every
                  peer loads (convscope's service prunes the same graph the same way for
                  its predictions, service/runtime.py), so every server runs the same model
  input.png       a scikit-learn digit as a 28x28 greyscale PNG (benchmarks/images.py, the
                  project benchmark's body)
  prepare.json    sizes, the export's held-out accuracy, versions
"""
import argparse
import json
import os
import subprocess
import sys
import time

NAME = "digits-tinyvgg"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--digit", type=int, default=0, help="index into scikit-learn's digits")
    args = ap.parse_args()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    repo = os.path.join(out, "models")

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "model_export", "--arch", "tinyvgg", "--dataset", "digits",
                    "--name", NAME, "--out", repo], check=True, stdout=subprocess.DEVNULL)
    artifact = os.path.join(repo, NAME, "1")
    info = {"model": NAME, "export_s": round(time.perf_counter() - started, 1)}

    import onnx
    import onnxruntime as ort

    sys.path.insert(0, os.getcwd())  # the project root: its benchmarks package makes the digit
    from benchmarks.images import digit_png

    with open(os.path.join(artifact, "metadata.json")) as f:
        metadata = json.load(f)
    output = metadata["output"]["name"]
    proto = onnx.load(os.path.join(artifact, "model.onnx"))
    keep = [o for o in proto.graph.output if o.name == output]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    onnx.checker.check_model(proto)
    onnx_path = os.path.join(out, "model.onnx")
    onnx.save(proto, onnx_path)
    info["onnx_bytes"] = os.path.getsize(onnx_path)
    info["onnxruntime"] = ort.__version__
    info["held_out_accuracy"] = (metadata.get("training") or {}).get("accuracy")

    png = os.path.join(out, "input.png")
    with open(png, "wb") as f:
        f.write(digit_png(args.digit))
    info["png_bytes"] = os.path.getsize(png)
    with open(os.path.join(out, "prepare.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
