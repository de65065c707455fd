"""Predictions and a feature map from convscope with a stock Triton client.

    python examples/triton_client.py localhost:8000 digits-tinyvgg
    python examples/triton_client.py localhost:8000 digits-tinyvgg --image seven.png --layer features.1

Nothing here is convscope-specific: ``tritonclient.http`` speaks the Open Inference
Protocol (KServe v2), which convscope serves next to its own v1 API. Without --image the
input is a seeded random tensor of the model's input shape; with it, the server decodes
and preprocesses the image itself (the BYTES input ``image_bytes``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server address, host:port (http:// is optional)")
    parser.add_argument("model", help="model name, as listed by GET /v1/models")
    parser.add_argument("--image", help="an encoded image (PNG, JPEG, ...) to classify")
    parser.add_argument("--layer", help="the layer whose feature map to fetch (default: the first)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show")
    args = parser.parse_args(argv)

    url = args.url.removeprefix("http://")
    client = httpclient.InferenceServerClient(url=url)
    try:
        server = client.get_server_metadata()
        print(f"server: {server['name']} {server['version']}; extensions: {', '.join(server['extensions'])}")
        if not client.is_model_ready(args.model):
            print(f"model {args.model} is not ready", file=sys.stderr)
            return 1
        metadata = client.get_model_metadata(args.model)
        tensor_meta, image_meta = metadata["inputs"]
        class_meta, *layer_metas = metadata["outputs"]
        print(f"model: {metadata['name']} versions {metadata['versions']} on {metadata['platform']}")
        for kind in ("inputs", "outputs"):
            print(f"  {kind + ':':8} " + ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in metadata[kind]))
        layer = args.layer or layer_metas[0]["name"]

        if args.image:
            with open(args.image, "rb") as f:
                data = np.array([f.read()], dtype=np.object_)
            model_input = httpclient.InferInput(image_meta["name"], [1], "BYTES")
            model_input.set_data_from_numpy(data)
        else:
            shape = [1, *tensor_meta["shape"][1:]]
            data = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
            model_input = httpclient.InferInput(tensor_meta["name"], shape, "FP32")
            model_input.set_data_from_numpy(data)  # binary tensor data

        outputs = [
            httpclient.InferRequestedOutput(class_meta["name"], class_count=args.top),  # "value:index:label"
            httpclient.InferRequestedOutput(layer),  # a feature map, as binary data
        ]
        result = client.infer(args.model, [model_input], outputs=outputs, request_id="example-1")
    except InferenceServerException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()

    response = result.get_response()
    print(f"answered by {response['model_name']} version {response['model_version']} (id {response['id']})")
    print(f"top {args.top} (logit:index:label):")
    for entry in result.as_numpy(class_meta["name"])[0]:
        print(f"  {entry.decode()}")
    maps = result.as_numpy(layer)
    per_channel = maps[0].reshape(maps.shape[1], -1)
    print(f"feature map {layer}: {maps.dtype} {list(maps.shape)}")
    for c, channel in enumerate(per_channel[:4]):
        print(f"  channel {c}: min {channel.min():.4f} max {channel.max():.4f} mean {channel.mean():.4f}")
    if len(per_channel) > 4:
        print(f"  ... {len(per_channel) - 4} more channels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
