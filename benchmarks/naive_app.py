"""The baseline a user would write without convscope: FastAPI + PyTorch eager, one request
at a time.

An ``async def`` endpoint reads the body, decodes it with Pillow, preprocesses it with the
artifact's recipe (mode, resize, scale, mean/std from metadata.json), and runs ``model(x)``
under ``torch.inference_mode()`` on the event loop, so requests never overlap and never
batch. The network is built from ``model_export``'s architecture registry with random
weights (speed is what counts here, not the answer). torch keeps its default threads.

``python -m benchmarks.naive_app --model-dir REPO/NAME --port 8001`` (run.py starts it).
"""

import argparse
import io
import json
import sys
from pathlib import Path


def build_app(model_dir: Path):  # -> FastAPI
    # No `from __future__ import annotations` in this module: FastAPI must see `Request`
    # as a class, not a string it cannot resolve from this function's local imports.
    import numpy as np
    import torch
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from PIL import Image

    from model_export.architectures import REGISTRY

    version = max((p for p in model_dir.iterdir() if p.name.isdigit() and (p / "metadata.json").exists()),
                  key=lambda p: int(p.name))
    metadata = json.loads((version / "metadata.json").read_text())
    spec = metadata["input"]
    channels, (height, width) = int(spec["channels"]), spec["size"]
    labels = metadata["labels"]
    mode = "L" if channels == 1 else "RGB"
    resample = getattr(Image.Resampling, str(spec.get("resize", "bilinear")).upper())
    scale = np.float32(spec["scale"])
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(channels, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(channels, 1, 1)

    model = REGISTRY[metadata["arch"]].builder(channels, (height, width), len(labels))
    model.eval()

    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        data = await request.body()
        image = Image.open(io.BytesIO(data)).convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), resample)
        array = np.asarray(image, dtype=np.float32)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        x = torch.from_numpy(np.ascontiguousarray((array * scale - mean) / std))[None]
        with torch.inference_mode():
            probabilities = torch.softmax(model(x), dim=1)[0]
        top = torch.topk(probabilities, min(5, len(labels)))
        return JSONResponse({"predictions": [
            {"label": labels[i], "index": int(i), "probability": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())
        ]})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive_app", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="repository/<name>; the newest version")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(build_app(args.model_dir), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
