"""The GPU, verified in one short run (issue 14): on a machine with an NVIDIA GPU and
onnxruntime's CUDA build, with no network, in a few minutes:

1. brings an AlexNet-224 artifact (``--model-dir``) or exports an untrained one;
2. starts ``python -m service`` with ``CONVSCOPE_PROVIDERS=<provider>,CPUExecutionProvider``
   and asserts that the provider reported by ``/v1/models`` and the model's metadata is
   the one asked for (a CUDA build that silently fell back to the CPU fails here);
3. compares the service's outputs (v2 inference on one preprocessed photo: the logits and
   the first feature map) with onnxruntime on the CPU in this process, within
   ``max|service - cpu| <= tol * max(1, max|cpu|)`` (``--tolerance``, default 1e-2 for
   CUDA, whose convolutions and GEMMs may use TF32; 1e-5 for ``--provider cpu``);
4. measures raw onnxruntime on the provider with I/O binding (input copied to the
   device once, outputs left there) at batch 1, 16 and 64, and the service at
   concurrency 1, 16 and 64 (wrk, else the Python load generator);
5. writes the results as markdown (default ``benchmarks/RESULTS-gpu.md``).

``--provider cpu`` runs the same steps on the CPU, so the script is tested where no GPU
is (tests/benchmarks/test_gpu_check.py, in make test's slow tier).

    bash benchmarks/gpu_check.sh                       # CUDA, AlexNet-224 exported here
    bash benchmarks/gpu_check.sh --provider cpu --out /tmp/gpu-cpu.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import loadgen
from benchmarks.images import photo_jpeg
from benchmarks.run import OUT, ROOT, Server, free_port, log

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEFAULT_TOLERANCE = {"cuda": 1e-2, "cpu": 1e-5}


class CheckFailed(Exception):
    """A verification step did not hold; the message says which and by how much."""


# What the service and this script import. The GPU machines' image lacks the web stack
# (fastapi, uvicorn, pydantic-settings, ...): carry those as wheels and
# `pip install --no-index --find-links DIR` them first (benchmarks/README.md).
NEEDED = ("numpy", "PIL", "onnx", "onnxruntime", "fastapi", "uvicorn", "pydantic_settings", "prometheus_client",
          "httpx", "orjson", "imagecodecs", "sklearn")


def missing_modules(exporting: bool) -> list[str]:
    wanted = NEEDED + (("torch",) if exporting else ())
    return [name for name in wanted if importlib.util.find_spec(name) is None]


def export_artifact(arch: str, repository: Path, env: dict[str, str]) -> Path:
    name = f"gpu-check-{arch}"
    if not any((repository / name).glob("*/metadata.json")):
        log(f"exporting {name} (untrained: speed and agreement do not depend on the weights) ...")
        cmd = [sys.executable, "-m", "model_export", "--arch", arch, "--dataset", "digits", "--epochs", "0",
               "--name", name, "--out", str(repository), "--quiet", "--if-missing"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return repository / name


def load_reference(model_dir: Path) -> tuple[Any, Any]:
    """(artifact, InputSpec) of the newest version in a model folder."""
    from service.inference.preprocessing import InputSpec
    from service.models.repository import load_artifact, scan

    ref = max((r for r in scan(model_dir.parent) if r.name == model_dir.name), key=lambda r: r.version)
    artifact = load_artifact(ref)
    return artifact, InputSpec.from_recipe(artifact.metadata.input)


def sample_input(spec: Any) -> tuple[bytes, str, np.ndarray]:
    """A real photo at the model's size: (JPEG bytes, content type, preprocessed CHW)."""
    from PIL import Image

    from service.inference.preprocessing import decode, preprocess

    data = photo_jpeg(spec.width)
    if spec.height != spec.width or spec.channels != 3:  # not an RGB square: a PNG of the right shape
        import io

        image = Image.open(io.BytesIO(data)).convert(spec.mode).resize((spec.width, spec.height))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        content_type = "image/png"
    else:
        content_type = "image/jpeg"
    tensor = preprocess(decode(data, max_pixels=10**8, spec=spec), spec)
    return data, content_type, tensor


def check_provider(url: str, name: str, expected: str) -> dict[str, str]:
    import httpx

    listed = httpx.get(f"{url}/v1/models", timeout=30).json()
    versions = next(m for m in listed["models"] if m["name"] == name)["versions"]
    in_list = versions[0].get("provider", "(none)")
    in_metadata = httpx.get(f"{url}/v1/models/{name}", timeout=30).json().get("provider", "(none)")
    if in_list != expected or in_metadata != expected:
        raise CheckFailed(f"the service reports provider {in_list!r} in /v1/models and {in_metadata!r} in the "
                          f"model's metadata; expected {expected!r}")
    return {"/v1/models": in_list, f"/v1/models/{name}": in_metadata}


def compare_outputs(url: str, artifact: Any, tensor: np.ndarray, tolerance: float) -> list[dict[str, Any]]:
    """The service's logits and first feature map vs onnxruntime on the CPU, same input."""
    import httpx
    import onnxruntime as ort

    metadata = artifact.metadata
    names = [metadata.output.name, metadata.layers[0].name]
    batch = tensor[None].astype(np.float32)
    body = {"inputs": [{"name": metadata.input.name, "datatype": "FP32", "shape": list(batch.shape),
                        "data": batch.ravel().tolist()}],
            "outputs": [{"name": n} for n in names]}
    response = httpx.post(f"{url}/v2/models/{artifact.name}/infer", json=body, timeout=120)
    if response.status_code != 200:
        raise CheckFailed(f"v2 inference answered {response.status_code}: {response.text[:300]}")
    served = {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
              for o in response.json()["outputs"]}
    cpu = ort.InferenceSession(str(artifact.model_path), providers=["CPUExecutionProvider"])
    reference = dict(zip(names, cpu.run(names, {metadata.input.name: batch})))
    rows = []
    for name in names:
        ref, got = reference[name], served[name]
        if ref.shape != got.shape:
            raise CheckFailed(f"output {name}: shape {list(got.shape)} from the service, {list(ref.shape)} on the CPU")
        diff = float(np.abs(got - ref).max())
        limit = tolerance * max(1.0, float(np.abs(ref).max()))
        rows.append({"output": name, "shape": list(ref.shape), "max_abs_diff": diff, "limit": limit,
                     "max_abs_ref": float(np.abs(ref).max()), "ok": diff <= limit})
    bad = [r for r in rows if not r["ok"]]
    if bad:
        raise CheckFailed("; ".join(f"output {r['output']}: max |service - cpu| = {r['max_abs_diff']:.3g} > "
                                    f"{r['limit']:.3g}" for r in bad))
    return rows


def measure_raw(artifact: Any, provider: str, tensor: np.ndarray, batches: list[int],
                seconds: float) -> list[dict[str, Any]]:
    """onnxruntime alone on ``provider``, the service's logits-only session, I/O binding:
    the input is copied to the device once, the output stays there."""
    from service.models.runtime import CPU, RuntimeOptions, load_model

    options = RuntimeOptions(providers=[provider] if provider == CPU else [provider, CPU])
    model = load_model(artifact, options)
    session, device = model.logits_session, ("cuda" if provider != CPU else "cpu")
    results = []
    for batch_size in batches:
        batch = np.ascontiguousarray(np.repeat(tensor[None], batch_size, axis=0))
        import onnxruntime as ort

        binding = session.io_binding()
        binding.bind_ortvalue_input(model.input_name, ort.OrtValue.ortvalue_from_numpy(batch, device, 0))
        binding.bind_output(model.output_name, device)
        for _ in range(3):
            session.run_with_iobinding(binding)
        times: list[float] = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop or len(times) < 5:
            t0 = time.perf_counter()
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            times.append(time.perf_counter() - t0)
        p50 = statistics.median(times)
        results.append({"batch": batch_size, "runs": len(times), "p50_ms": 1000 * p50,
                        "images_per_s": batch_size * len(times) / sum(times)})
        log(f"    raw batch {batch_size:>3}: {results[-1]['images_per_s']:9.1f} images/s, p50 {1000 * p50:.2f} ms/run")
    return results


def markdown(info: dict[str, Any]) -> str:
    lines = [
        f"# convscope on the GPU (issue 14): {info['provider']}",
        "",
        f"- Date: {info['date']} UTC; commit {info['commit']}; {info['device']}",
        f"- onnxruntime {info['onnxruntime']} (providers in this build: {', '.join(info['available'])}); "
        f"Python {info['python']}",
        f"- Model: {info['model']} (input {info['input']}); load generator {info['generator']}; "
        f"{info['duration']:g} s per point",
        f"- Whole check: {info['elapsed_s']:.0f} s",
        "",
        "## Provider",
        "",
        *[f"- {where}: `{value}`" for where, value in info["provider_reported"].items()],
        "",
        "## Outputs vs onnxruntime on the CPU",
        "",
        f"Tolerance: max |service - cpu| <= {info['tolerance']:g} x max(1, max |cpu|).",
        "",
        "| output | shape | max abs diff | limit | max abs (cpu) | |",
        "|---|---|---|---|---|---|",
        *[f"| {r['output']} | {r['shape']} | {r['max_abs_diff']:.3g} | {r['limit']:.3g} | {r['max_abs_ref']:.3g} | "
          f"{'PASS' if r['ok'] else 'FAIL'} |" for r in info["comparison"]],
        "",
        "## Speed",
        "",
        "Raw: onnxruntime alone, the service's logits-only session, I/O binding (input on the device, "
        "output left there), back-to-back runs. Service: POST /v1/models/{name}/predict with the JPEG, "
        "closed loop.",
        "",
        "| system | batch / concurrency | images/s | p50 ms | p99 ms | × raw best | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    best = max(r["images_per_s"] for r in info["raw"])
    for r in info["raw"]:
        lines.append(f"| raw onnxruntime | batch {r['batch']} | {r['images_per_s']:.1f} | {r['p50_ms']:.2f} | – | "
                     f"{r['images_per_s'] / best:.2f} | – |")
    for r in info["service"]:
        lines.append(f"| service | c={r['concurrency']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['rps'] / best:.2f} | {r['errors']} |")
    return "\n".join(lines) + "\n"


def device_name(provider: str) -> str:
    if provider != "cuda":
        return f"CPU only ({os.cpu_count()} logical CPUs)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return "GPU: " + out.stdout.strip().replace("\n", "; ") if out.returncode == 0 else "GPU: nvidia-smi failed"
    except (OSError, subprocess.TimeoutExpired):
        return "GPU: nvidia-smi not found"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument("--model-dir", type=Path, help="an artifact folder repository/<name> (default: export one)")
    parser.add_argument("--arch", default="alexnet", help="architecture exported when --model-dir is not given")
    parser.add_argument("--repository", type=Path, default=OUT / "models", help="where an exported model goes")
    parser.add_argument("--tolerance", type=float, help="relative tolerance (default 1e-2 cuda, 1e-5 cpu)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured point")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument("--out", type=Path, help="markdown results (default benchmarks/RESULTS-gpu.md for cuda, "
                                                 "benchmarks/out/RESULTS-gpu-cpu.md for cpu)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    provider = PROVIDERS[args.provider]
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE[args.provider]
    out = args.out or (ROOT / "benchmarks" / "RESULTS-gpu.md" if args.provider == "cuda"
                       else OUT / "RESULTS-gpu-cpu.md")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["CONVSCOPE_PROVIDERS"] = provider if provider == PROVIDERS["cpu"] else f"{provider},{PROVIDERS['cpu']}"

    missing = missing_modules(exporting=args.model_dir is None)
    if missing:
        log(f"error: missing Python packages: {', '.join(missing)} (install them, or carry their wheels where "
            "there is no package registry)")
        return 2
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        log(f"error: this onnxruntime build ({ort.__version__}) has no {provider}; it has {', '.join(available)}. "
            "Install the CUDA build (onnxruntime-gpu) in place of onnxruntime, or run with --provider cpu.")
        return 2
    model_dir = args.model_dir.resolve() if args.model_dir else export_artifact(args.arch, args.repository.resolve(), env)
    artifact, spec = load_reference(model_dir)
    body, content_type, tensor = sample_input(spec)
    body_path = OUT / "bodies" / f"gpu-check-{artifact.name}{'.jpg' if content_type == 'image/jpeg' else '.png'}"
    body_path.parent.mkdir(parents=True, exist_ok=True)
    body_path.write_bytes(body)
    generator = args.loadgen if args.loadgen != "auto" else ("wrk" if loadgen.have_wrk() else "httpx")
    info: dict[str, Any] = {
        "provider": provider, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip() or "unknown",
        "device": device_name(args.provider), "onnxruntime": ort.__version__, "available": available,
        "python": sys.version.split()[0], "model": f"{artifact.name} v{artifact.version}",
        "input": "x".join(map(str, spec.shape)), "generator": generator, "duration": args.duration,
        "tolerance": tolerance,
    }

    log(f"[raw onnxruntime] {provider}, I/O binding")
    info["raw"] = measure_raw(artifact, provider, tensor, [int(b) for b in args.batches.split(",")], args.duration)
    port = free_port()
    log(f"[service] python -m service with CONVSCOPE_PROVIDERS={env['CONVSCOPE_PROVIDERS']}")
    server = Server(f"gpu-check-{args.provider}", [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port",
                                                   str(port), "--model-repository", str(model_dir.parent),
                                                   "--log-level", "warning"], env, "/readyz", port)
    try:
        info["provider_reported"] = check_provider(server.url, artifact.name, provider)
        log(f"    provider reported: {info['provider_reported']}")
        info["comparison"] = compare_outputs(server.url, artifact, tensor, tolerance)
        for row in info["comparison"]:
            log(f"    {row['output']}: max |service - cpu| {row['max_abs_diff']:.3g} (limit {row['limit']:.3g})")
        info["service"] = []
        url = f"{server.url}/v1/models/{artifact.name}/predict"
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            result = loadgen.measure(url, body_path, content_type, concurrency, args.duration,
                                     min(2.0, args.duration / 2), generator)
            info["service"].append(result.as_dict())
            log(f"    c={concurrency:>3}: {result.rps:9.1f} images/s  p50 {result.p50_ms:8.2f} ms  errors {result.errors}")
            if result.errors:
                raise CheckFailed(f"{result.errors} failed requests at concurrency {concurrency}")
    except CheckFailed as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        server.stop()
    info["elapsed_s"] = time.monotonic() - began
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(info))
    (out.with_suffix(".json")).write_text(json.dumps(info, indent=1, default=str))
    log(f"all checks passed in {info['elapsed_s']:.0f} s; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
