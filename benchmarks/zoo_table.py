"""The zoo measured: every entry of benchmarks/zoo.py imported, served by one server, and
checked; prints (or writes into docs/models.md) the table.

    python -m benchmarks.zoo_table [--cache DIR] [--write docs/models.md] [--quick] [--arch NAME ...]

Per entry: import seconds (`model_export import`, in this process), parameters, layers
tapped, spatial layers (rank 4, more than one position) with a receptive field, the
largest difference between the probabilities served over HTTP and those onnxruntime gives
on the original file for held-out images, whether grad-cam is offered on the last spatial
layer (`GET /v1/models/{name}/layers`), and its gradient's largest relative difference
from PyTorch autograd through the trained net's head. The checks are the functions the
tests (tests/integration/test_import_zoo.py) assert on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import zoo

DEFAULT_CACHE = Path(".pytest_cache") / "d" / "convscope-zoo"
TABLE_START = "<!-- zoo-table -->"
TABLE_END = "<!-- /zoo-table -->"
SERVED_TOLERANCE = 1e-5
# A float16 graph on onnxruntime's CPU provider computes many ops in float32 between Casts it
# inserts, and which roundings to float16 it skips depends on the graph's outputs: the served
# graph (float32 out, layers tapped) and the file round differently, by float16's precision
# (~5e-4 relative) on logits of ~10-20, up to ~1e-2 in a probability. The import's parity
# uses the same 1e-2.
SERVED_TOLERANCE_FLOAT16 = 1e-2
GRADIENT_TOLERANCE = 1e-4
GRADIENT_TOLERANCE_FLOAT16 = 1e-2


@dataclass
class Imported:
    entry: zoo.Entry
    source: Path  # the zoo file
    path: Path | None  # the artifact version directory; None when the import failed
    metadata: dict[str, Any]
    seconds: float
    error: str | None


def import_entry(entry: zoo.Entry, cache: Path, repository: Path) -> Imported:
    """Build the entry (cached) and import it into ``repository`` with the CLI."""
    from model_export.cli import main

    source = zoo.build(entry.arch, entry.exporter, entry.opset, entry.variant, cache)
    mean, std = zoo.normalisation()
    labels = Path(cache) / f"labels-{zoo.data().name}.json"
    labels.write_text(json.dumps(zoo.data().classes))
    args = ["import", str(source), "--name", entry.name, "--out", str(repository), "--labels", str(labels),
            "--mean", *map(str, mean), "--std", *map(str, std), "--quiet"]
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    seconds = time.monotonic() - start
    if rc != 0:
        return Imported(entry, source, None, {}, seconds, err.getvalue().strip())
    path = Path(out.getvalue().strip().splitlines()[-1])
    return Imported(entry, source, path, json.loads((path / "metadata.json").read_text()), seconds, None)


def spatial_layers(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Layers with a map of more than one position: each should have a receptive field."""
    return [layer for layer in metadata["layers"]
            if len(layer["output_shape"]) == 4 and layer["output_shape"][2] * layer["output_shape"][3] > 1]


def last_spatial(metadata: dict[str, Any]) -> str:
    return str(spatial_layers(metadata)[-1]["name"])


def images(cache: Path, count: int = 4) -> list[Path]:
    """Held-out PNGs of different classes."""
    root = zoo.heldout(cache)
    return [sorted(folder.iterdir())[0] for folder in sorted(root.iterdir())][:count]


def _probabilities(scores: np.ndarray, kind: str) -> np.ndarray:
    scores = scores.astype(np.float64)
    if kind == "logits":
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))
    if kind == "log_probabilities":
        return np.exp(scores)
    return scores  # probabilities, or multilabel scores: served as they are


def reference_probabilities(imported: Imported, image: Path) -> np.ndarray:
    """What onnxruntime gives on the original file for the image, prepared as the service prepares it."""
    import onnxruntime as ort
    from PIL import Image

    from artifact import InputRecipe
    from service.inference.preprocessing import InputSpec, preprocess

    spec = InputSpec.from_recipe(InputRecipe.model_validate(imported.metadata["input"]))
    x = preprocess(Image.open(image), spec)[None]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # exporters leave unused initializers; onnxruntime warns of each
    session = ort.InferenceSession(str(imported.source), options, providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: imported.entry.feed(x)})[0]
    return _probabilities(np.asarray(scores, dtype=np.float32), imported.entry.kind)[0]


def served_probabilities(url: str, name: str, image: Path) -> np.ndarray:
    request = urllib.request.Request(f"{url}/v1/models/{name}/predict?top_k={zoo.CLASSES}", data=image.read_bytes(),
                                     headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    probabilities = np.zeros(zoo.CLASSES)
    for p in body["predictions"]:
        probabilities[p["index"]] = p["probability"]
    return probabilities


def served_max_diff(imported: Imported, url: str, cache: Path) -> float:
    return max(float(np.abs(served_probabilities(url, imported.entry.name, image)
                            - reference_probabilities(imported, image)).max()) for image in images(cache))


def catalogue(url: str, name: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v1/models/{name}/layers", timeout=60) as response:
        return dict(json.loads(response.read()))


def grad_cam_offered(url: str, imported: Imported) -> bool:
    layer = last_spatial(imported.metadata)
    rows = {row["name"]: row for row in catalogue(url, imported.entry.name)["layers"]}
    return "grad-cam" in rows[layer]["explain_methods"]


def gradient_error(imported: Imported, cache: Path) -> float | None:
    """max |service gradient - autograd| / max |autograd| at the last spatial layer, over two
    held-out images and their best and worst classes; None where the service has no exact head."""
    import onnx
    import onnxruntime as ort
    import torch
    from PIL import Image

    from artifact import InputRecipe, parse_metadata
    from service.explain import describe
    from service.inference.preprocessing import InputSpec, preprocess

    assert imported.path is not None
    model = onnx.load(str(imported.path / "model.onnx"))
    layer = last_spatial(imported.metadata)
    head = describe(imported.entry.name, parse_metadata(imported.metadata), model).grad_head(layer)
    if head is None:
        return None
    net = zoo.trained(imported.entry.arch, cache)
    session = ort.InferenceSession(str(imported.path / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = InputSpec.from_recipe(InputRecipe.model_validate(imported.metadata["input"]))
    worst = 0.0
    for image in images(cache, 2):
        x = preprocess(Image.open(image), spec)[None]
        acts = session.run([layer], {"input": x})[0]
        tensor = torch.from_numpy(acts.copy()).requires_grad_(True)
        logits = zoo.ARCHS[imported.entry.arch].head(net, tensor)
        for target in (int(logits.argmax()), int(logits.argmin())):
            (reference,) = torch.autograd.grad(logits[0, target], tensor, retain_graph=True)
            _, gradient = head.gradient(acts, target)
            scale = max(float(reference.abs().max()), 1e-12)
            worst = max(worst, float(np.abs(gradient - reference.numpy()).max()) / scale)
    return worst


def served_tolerance(entry: zoo.Entry) -> float:
    return SERVED_TOLERANCE_FLOAT16 if entry.float16 else SERVED_TOLERANCE


def gradient_tolerance(entry: zoo.Entry) -> float:
    return GRADIENT_TOLERANCE_FLOAT16 if entry.float16 else GRADIENT_TOLERANCE


class ZooServer:
    """One server for a repository that imports join while it runs (the repository poll)."""

    def __init__(self, repository: Path, start: Any) -> None:
        self.repository = repository
        self._start = start  # (repository, **settings) -> ServerProcess
        self.server: Any = None

    def url_for(self, name: str, timeout: float = 120.0) -> str:
        """The server's URL once it serves ``name`` (started on first use)."""
        if self.server is None:
            # Alive, not ready: readiness waits for every model already imported (72 in the
            # whole zoo, about a second each), and each model's own readiness is awaited below.
            self.server = self._start(self.repository, ready_path="/healthz", repository_poll_seconds=0.5)
        deadline = time.monotonic() + timeout
        url = str(self.server.url)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/v2/models/{name}/ready", timeout=5) as response:
                    if response.status == 200:
                        return url
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} was not served within {timeout:.0f} s:\n{self.server.logs()[-2000:]}")


@dataclass
class Row:
    entry: zoo.Entry
    seconds: float
    params: int | None
    layers: int | None
    spatial: int | None
    with_field: int | None
    served_diff: float | None
    grad_cam: bool | None
    gradient: float | None
    error: str | None


def measure(entry: zoo.Entry, cache: Path, repository: Path, server: ZooServer) -> Row:
    imported = import_entry(entry, cache, repository)
    if imported.error is not None:
        return Row(entry, imported.seconds, None, None, None, None, None, None, None, imported.error)
    meta = imported.metadata
    spatial = spatial_layers(meta)
    url = server.url_for(entry.name)
    return Row(entry, imported.seconds, meta["params"]["total"], len(meta["layers"]), len(spatial),
               sum(layer["receptive_field"] is not None for layer in spatial), served_max_diff(imported, url, cache),
               grad_cam_offered(url, imported), gradient_error(imported, cache), None)


def _start_server(repository: Path, *, ready_path: str = "/readyz", **settings: object) -> Any:
    from service.testing import ServerProcess, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVSCOPE_")}
    env.update({f"CONVSCOPE_{k.upper()}": str(v) for k, v in settings.items()})
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--model-repository", str(repository)]
    return ServerProcess(command, port=port, env=env, log=repository.parent / "server.log", timeout=300,
                         ready_path=ready_path)


def table(rows: Sequence[Row], cache: Path) -> str:
    lines = ["| architecture | exporter | opset | variant | import s | params | layers | spatial with a field | "
             "max prob diff | grad-cam offered | gradient vs autograd | result |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        e = r.entry
        if r.error is not None:
            lines.append(f"| {e.arch} | {e.exporter} | {e.opset} | {e.variant} | {r.seconds:.1f} | | | | | | | "
                         f"failed: {r.error.splitlines()[0].replace('|', '/')[:200]} |")
            continue
        failed = _failures(r)
        lines.append(
            f"| {e.arch} | {e.exporter} | {e.opset} | {e.variant} | {r.seconds:.1f} | {r.params:,} | {r.layers} | "
            f"{r.with_field}/{r.spatial} | {r.served_diff:.1e} | {'yes' if r.grad_cam else 'no'} | "
            f"{'-' if r.gradient is None else f'{r.gradient:.1e}'} | {'pass' if not failed else ', '.join(failed)} |")
    records = [zoo.training_record(a, cache) for a in zoo.ARCHS]
    trained = ", ".join(f"{r['arch']} {r['accuracy']:.0%} ({r['steps']} steps, {r['seconds']:.0f} s)"
                        for r in records if r)
    return "\n".join(lines) + f"\n\nHeld-out accuracy after the brief training ({zoo.data().name}, 500 test images): " \
        f"{trained}.\n"


def _failures(r: Row) -> list[str]:
    failed = []
    if r.with_field != r.spatial:
        failed.append("fields")
    if r.served_diff is None or not r.served_diff <= served_tolerance(r.entry):
        failed.append("probabilities")
    if not r.grad_cam:
        failed.append("grad-cam")
    if r.gradient is None or not r.gradient <= gradient_tolerance(r.entry):
        failed.append("gradient")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"zoo cache (default: {DEFAULT_CACHE})")
    parser.add_argument("--write", type=Path, help="replace the table between the zoo-table markers of this file")
    parser.add_argument("--quick", action="store_true", help="only the entries `make test` runs")
    parser.add_argument("--arch", action="append", help="only these architectures")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    entries = [e for e in (zoo.QUICK if args.quick else zoo.ENTRIES) if not args.arch or e.arch in args.arch]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ZooServer(Path(tmp) / "models", _start_server)
        try:
            for entry in entries:
                try:
                    row = measure(entry, args.cache, server.repository, server)
                except Exception as exc:  # one entry's failure is a row, not the end of the table
                    row = Row(entry, 0.0, None, None, None, None, None, None, None, f"{type(exc).__name__}: {exc}")
                print(f"{entry.name}: {row}", file=sys.stderr, flush=True)
                rows.append(row)
        finally:
            if server.server is not None:
                server.server.stop()
    text = table(rows, args.cache)
    if args.write:
        doc = args.write.read_text()
        start, end = doc.index(TABLE_START) + len(TABLE_START), doc.index(TABLE_END)
        args.write.write_text(doc[:start] + "\n" + text + doc[end:])
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
