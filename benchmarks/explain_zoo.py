"""Explanations on real architectures (issue 21): every method measured on the zoo's trained
torchvision nets (benchmarks/zoo.py, Fashion-MNIST at 64 px, trained until they have learned:
``Arch.budget(learned=True)``, 1-4 minutes each on 2 cores; `--brief` for the tests' seconds) and on
AlexNet at 224 px trained briefly on a Fashion-MNIST subset, 30 held-out images each.

    python -m benchmarks.explain_zoo --write benchmarks/RESULTS-explain.md   # the whole table
    python -m benchmarks.explain_zoo --models resnet18,alexnet --images 10   # a part of it

Builds what is missing, once (cached): the zoo's trained weights and ONNX files (TorchScript,
opset 17; `$CONVSCOPE_ZOO_CACHE` or pytest's cache, as benchmarks/zoo_table.py), each imported
with `python -m model_export import ... --data-dir <the held-out ImageFolder>`, and AlexNet
exported with `python -m model_export --arch alexnet ...`, into benchmarks/out/explain-zoo.

Each model is measured as its export measures it (service/explain/survey.py: the service's
engine in-process with onnxruntime, each method with its default settings and layer,
faithfulness on, one image at a time), with more time: `--seconds` per model (all methods;
the cheap ones first, each at least one image). Per model x method: the share of images
whose map beat a random map, forward passes, median seconds, mean deletion areas; and the
default the export's rule chooses from them. Seconds depend on the machine's load: the
table says the load average before and after each model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import zoo
from benchmarks.run import ROOT, machine_info

DEFAULT_CACHE = Path(".pytest_cache") / "d" / "convscope-zoo"
REPOSITORY = ROOT / "benchmarks" / "out" / "explain-zoo"
TABLE_START = "<!-- explain-zoo -->"
TABLE_END = "<!-- /explain-zoo -->"
ALEXNET = "fashion-alexnet-224"
# AlexNet at 224 px, trained briefly so its maps mean something (75% held-out accuracy after
# 2 epochs of 3000 images; 6 min on an idle 2-core machine, 12 under load).
ALEXNET_ARGS = ["--arch", "alexnet", "--dataset", "fashion-mnist", "--epochs", "2", "--lr", "3e-4",
                "--batch-size", "64", "--max-train-samples", "3000", "--max-val-samples", "500",
                "--parity-images", "8", "--channel-images", "0", "--explain-images", "0"]


def cache_dir() -> Path:
    return Path(os.environ.get("CONVSCOPE_ZOO_CACHE") or DEFAULT_CACHE)


def _cli(args: list[str]) -> Path:
    from model_export.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    if rc != 0:
        raise RuntimeError(f"model_export {' '.join(args[:2])} failed: {err.getvalue().strip()}")
    lines = out.getvalue().strip().splitlines()
    return Path(lines[-1]) if lines and Path(lines[-1]).is_dir() else Path()


def zoo_model(arch: str, cache: Path, repository: Path, learned: bool) -> Path:
    """The zoo's arch trained until it has learned (or for the tests' seconds), imported with
    its held-out folder (built and imported once; each budget in its own folder)."""
    entry = zoo.Entry(arch, "torchscript", 17)
    source = zoo.build(arch, entry.exporter, entry.opset, entry.variant, cache, learned)
    # The folder is the training run's cache key (budget, data, recipe, torch): a net trained
    # anew is imported anew.
    repository = repository / source.parent.name
    found = _newest(repository / entry.name)
    if found is not None:
        return found
    mean, std = zoo.normalisation()
    labels = cache / f"labels-{zoo.data().name}.json"
    labels.write_text(json.dumps(zoo.data().classes))
    return _cli(["import", str(source), "--name", entry.name, "--out", str(repository), "--labels", str(labels),
                 "--mean", *map(str, mean), "--std", *map(str, std), "--data-dir", str(zoo.heldout(cache)),
                 "--explain-images", "0", "--quiet"])


def alexnet_model(repository: Path) -> Path:
    found = _newest(repository / ALEXNET)
    if found is not None:
        return found
    return _cli([*ALEXNET_ARGS, "--out", str(repository), "--name", ALEXNET, "--quiet"])


def _newest(model_dir: Path) -> Path | None:
    from model_export.staging import complete_versions

    versions = complete_versions(model_dir)
    return model_dir / str(versions[-1]) if versions else None


def held_out(cache: Path, count: int) -> list[np.ndarray]:
    """``count`` held-out images, classes in turn (uint8, native size)."""
    from model_export.datasets import load_images

    data = load_images(zoo.heldout(cache)).val
    by_class = [np.flatnonzero(data.labels == label) for label in np.unique(data.labels)]
    order = [int(i) for group in zip(*by_class, strict=False) for i in group]
    return [data.images[i] for i in order[:count]]


def measure(path: Path, images: list[np.ndarray], seconds: float, methods: list[str] | None = None) -> dict[str, Any]:
    import onnx

    from artifact import read_metadata
    from model_export.explanations import OrtForward
    from model_export.preprocessing import InputSpec, preprocess
    from service.explain import Explainer, ExplainOptions, Method, describe, survey

    metadata = read_metadata(path)
    proto = onnx.load(str(path / metadata.model_file))
    explainer = Explainer(describe(metadata.name or path.parent.name, metadata, proto),
                          max_passes=ExplainOptions().max_passes)
    inp = metadata.input
    batch = preprocess(images, InputSpec(inp.channels, (inp.height, inp.width), tuple(inp.mean), tuple(inp.std),
                                         inp.scale))

    def progress(method: str, done: int, offered: int) -> None:
        print(f"\r{metadata.name}: {method} {done}/{offered}   ", end="", file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    only = [Method(m) for m in methods] if methods else None
    record = asyncio.run(survey.measure(explainer, [batch[i : i + 1] for i in range(len(batch))],
                                        OrtForward(proto, metadata), survey.SurveyLimits(len(batch), seconds),
                                        progress, only=only))
    print(file=sys.stderr)
    return {"model": metadata.name, "size": list(inp.size), "accuracy": (metadata.training.accuracy
                                                                         if metadata.training else None),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            **record.to_json()}


def merged(files: list[Path]) -> list[dict[str, Any]]:
    """Rows of several runs' JSON, per model: a later file's method replaces an earlier one's;
    the default chosen again from the merged methods (``survey.choose``, the export's rule)."""
    from artifact import MethodMeasurement
    from service.explain import Method, survey

    rows: dict[str, dict[str, Any]] = {}
    for path in files:
        for row in json.loads(path.read_text()):
            old = rows.get(row["model"])
            methods = {m["method"]: m for m in (old["methods"] if old else [])}
            # Each method keeps the load of the run that measured it.
            load = [row.get("load_before"), row.get("load_after")]
            methods.update({m["method"]: {"load": load, **m} for m in row["methods"]})
            rows[row["model"]] = {**(old or {}), **row, "methods": list(methods.values())}
    for row in rows.values():
        order = [m.value for m in Method]
        row["methods"].sort(key=lambda m: order.index(m["method"]))
        measured = [MethodMeasurement.model_validate({k: v for k, v in m.items() if k != "load"}) for m in row["methods"]]
        row["default_method"], row["reason"] = survey.choose(measured, row.get("load_average"), row.get("cpus"))
    return list(rows.values())


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info.get('cpu', '?')}, {info.get('usable_cpus', '?')} usable CPUs; onnxruntime "
        f"{info.get('onnxruntime', '?')}. `python -m benchmarks.explain_zoo --write benchmarks/RESULTS-explain.md`.",
        "Load average: the 1-minute figure before and after each model (seconds scale with it; shares and passes do "
        "not).",
        "",
        "| model | held-out accuracy | input | load | method | layer | images | beats random | passes | median s | deletion / random |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        for m in row["methods"]:
            chosen = " **(default)**" if m["method"] == row["default_method"] else ""
            lines.append(
                f"| {row['model']} | {_share(row.get('accuracy'))} | {row['size'][0]} px | {_load(m, row)} "
                f"| {m['method']}{chosen} | {m['layer'] or '-'} | {m['images']} | {m['share']:.0%} "
                f"| {m['passes']} | {m['median_seconds']:.2f} | {m['deletion']:.3f} / {m['random_deletion']:.3f} |")
    lines += ["", "Defaults chosen (service/explain/survey.py `choose`) and why:", ""]
    lines += [f"- **{row['model']}**: {row['reason']}" for row in rows]
    return "\n".join(lines) + "\n"


def _load(method: dict[str, Any], row: dict[str, Any]) -> str:
    before, after = method.get("load") or (row["load_before"], row["load_after"])
    return f"{before:.1f}-{after:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def write_table(path: Path, table: str) -> None:
    text = path.read_text() if path.is_file() else ""
    block = f"{TABLE_START}\n{table}{TABLE_END}"
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        text = head + block + rest.split(TABLE_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join([*zoo.ARCHS, "alexnet"]),
                        help="zoo architectures and/or alexnet (default: all nine and alexnet)")
    parser.add_argument("--images", type=int, default=30, help="held-out images per method (default: 30)")
    parser.add_argument("--seconds", type=float, default=900.0,
                        help="time per model, all methods together (default: 900)")
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--brief", action="store_true",
                        help="the zoo as the tests train it (seconds; default: trained until it has learned, "
                             "benchmarks/zoo.py Arch.budget)")
    parser.add_argument("--methods", help="measure only these methods (comma separated; default: every one)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: the table from these runs' JSON (per model, a later file's methods "
                             "replace an earlier one's; defaults chosen again)")
    parser.add_argument("--write", type=Path, help="put the table into this markdown file (between markers)")
    args = parser.parse_args(argv)
    if args.from_json:
        table = markdown(merged(args.from_json), machine_info())
        print(table)
        if args.write:
            write_table(args.write, table)
        return 0
    cache = cache_dir()
    images = held_out(cache, args.images)
    rows = []
    for name in args.models.split(","):
        started = time.monotonic()
        path = (alexnet_model(args.repository) if name == "alexnet"
                else zoo_model(name, cache, args.repository, not args.brief))
        print(f"{name}: {path} ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        row = measure(path, images, args.seconds, args.methods.split(",") if args.methods else None)
        if name != "alexnet":
            row["accuracy"] = zoo.training_record(name, cache, not args.brief).get("accuracy")
        rows.append(row)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    table = markdown(rows, machine_info())
    print(table)
    if args.write:
        write_table(args.write, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
