"""What an execution provider does with a model's float32 version and its int8 (static QDQ)
version, in this process with no HTTP (issue 22: "on a GPU serve the float version unless the
provider runs the int8 graph faster; say what the CUDA provider does with QDQ graphs").

For each version, the predictions graph as the service runs it (the class output only,
``service.models.runtime.class_output_only``), on ``--provider``:

1. which provider ran each node, by operator type, read off onnxruntime's profiler after
   one run (the nodes onnxruntime made of the graph: on the CPU a QDQ chain fused into
   QLinearConv / QGemm, elsewhere what is left of it);
2. the time of a batch of 1, 16 and 64 random images: median of ``--runs`` runs after two
   warm-ups; on CUDA with I/O binding (the input copied to the device once, the output left
   there), so the figure is the provider's, not the copies'.

    python -m benchmarks.int8_providers benchmarks/out/models/digits-alexnet
    python -m benchmarks.int8_providers MODEL_DIR --provider cuda --out RESULTS.md

MODEL_DIR is a model folder of a repository (``<name>/<version>/``): its newest int8
version and the float32 version it was quantized from. Exit status 2 when this
onnxruntime build lacks the provider.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
BATCHES = (1, 16, 64)


def versions(model_dir: Path) -> dict[str, Path]:
    """{"float32": dir, "int8": dir}: the newest int8 version and its float32 source."""
    found = {}
    for meta in sorted(model_dir.glob("*/metadata.json"), key=lambda p: int(p.parent.name)):
        record = json.loads(meta.read_text())
        if record.get("precision") == "int8":
            found = {"int8": meta.parent,
                     "float32": model_dir / str(record["quantization"]["quantized_from"])}
    if not found:
        raise SystemExit(f"{model_dir} holds no int8 version (python -m model_export quantize {model_dir})")
    return found


def predictions_graph(version: Path, into: Path) -> tuple[Path, str, list[int]]:
    """The version's graph with the class output only, written to ``into``; its input name and
    the shape of one image."""
    import onnx

    from service.models.runtime import class_output_only

    metadata = json.loads((version / "metadata.json").read_text())
    proto = onnx.load(str(version / metadata["model_file"]))
    class_output_only(proto, metadata["output"]["name"])
    path = into / f"{version.parent.name}-{version.name}.onnx"
    onnx.save(proto, str(path))
    return path, metadata["input"]["name"], [int(d) for d in metadata["input"]["shape"][1:]]


def session(path: Path, provider: str, profile: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    providers = [provider, "CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [provider]
    return ort.InferenceSession(str(path), options, providers=providers)


def placement(path: Path, provider: str, input_name: str, shape: list[int]) -> dict[str, dict[str, int]]:
    """{provider: {op type: nodes}} of one profiled run."""
    sess = session(path, provider, profile=True)
    sess.run(None, {input_name: np.zeros((1, *shape), np.float32)})
    events = json.loads(Path(sess.end_profiling()).read_text())
    seen: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)
    nodes = set()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event["name"].endswith("_kernel_time"):
            node = event["name"][:-len("_kernel_time")]
            if node not in nodes:
                nodes.add(node)
                seen[args["provider"]][args.get("op_name", "?")] += 1
    return {p: dict(sorted(c.items())) for p, c in seen.items()}


def timings(path: Path, provider: str, input_name: str, shape: list[int], runs: int) -> dict[int, float]:
    """{batch: median seconds of a run}."""
    sess = session(path, provider)
    output = sess.get_outputs()[0].name
    device = "cuda" if provider == "CUDAExecutionProvider" else "cpu"
    rng = np.random.default_rng(0)
    result = {}
    for batch in BATCHES:
        images = rng.random((batch, *shape), dtype=np.float32)
        binding = sess.io_binding()
        if device == "cuda":
            import onnxruntime as ort

            binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(images, "cuda", 0))
            binding.bind_output(output, "cuda")
        else:
            binding.bind_cpu_input(input_name, images)
            binding.bind_output(output)
        seconds = []
        for i in range(runs + 2):
            started = time.perf_counter()
            sess.run_with_iobinding(binding)
            if device == "cuda":
                binding.synchronize_outputs()
            if i >= 2:
                seconds.append(time.perf_counter() - started)
        result[batch] = statistics.median(seconds)
    return result


def markdown(model_dir: Path, provider: str, rows: dict[str, Any]) -> str:
    import onnxruntime as ort

    lines = [f"# float32 vs int8 (QDQ) on {provider}: {model_dir.name}", "",
             f"onnxruntime {ort.__version__}; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "| batch | float32 ms | int8 ms | int8 / float32 speed |", "| --- | --- | --- | --- |"]
    for batch in BATCHES:
        f, q = rows["float32"]["seconds"][batch], rows["int8"]["seconds"][batch]
        lines.append(f"| {batch} | {f * 1000:.2f} | {q * 1000:.2f} | {f / q:.2f}x |")
    lines += ["", "Nodes by provider (onnxruntime's graph after its optimizations, one profiled run):", ""]
    for label in ("float32", "int8"):
        for where, ops in rows[label]["placement"].items():
            listed = ", ".join(f"{op} {n}" for op, n in ops.items())
            lines.append(f"- {label}, {where}: {listed}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_providers", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    provider = PROVIDERS[args.provider]
    if provider not in ort.get_available_providers():
        print(f"this onnxruntime build ({ort.__version__}) lacks {provider}: it has "
              f"{', '.join(ort.get_available_providers())}", file=sys.stderr)
        return 2
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, version in versions(args.model_dir).items():
            path, input_name, shape = predictions_graph(version, Path(tmp))
            rows[label] = {"placement": placement(path, provider, input_name, shape),
                           "seconds": timings(path, provider, input_name, shape, args.runs)}
    text = markdown(args.model_dir, provider, rows)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
