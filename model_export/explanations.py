"""Which explanation method holds on this model: measured at export, stored in the artifact.

Where the export has images the model did not learn from (a training export's held-out
split, `import --data-dir`, `channel-view --data-dir`), every explanation method the
service offers for the model runs on a few of them exactly as the service runs it (the
engine of service/explain, the same ONNX graph in onnxruntime, default settings,
faithfulness on), bounded in images and time (service/explain/survey.py); the artifact's
`explanations` record keeps each method's share of maps that beat a random map, its passes
and its median time on this machine, and the default chosen from them with the reason.
Torch-free (numpy, onnx, onnxruntime).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from artifact import ExplanationsRecord, Metadata

from .datasets import Split, subset_indices
from .errors import ExportError
from .preprocessing import InputSpec, preprocess

T = TypeVar("T")


@dataclass
class MeasureOptions:
    images: int = 30  # held-out images each method may explain; 0: do not measure
    seconds: float = 60.0  # the whole measurement (at least one image per method)
    progress: bool = True
    seed: int = 0


def check_options(images: int, seconds: float) -> None:
    if images < 0:
        raise ExportError("--explain-images must be 0 (no measurement) or more")
    if not seconds > 0:
        raise ExportError("--explain-seconds must be positive")


def measure(model_path: Path, metadata: Metadata, held_out: Split, spec: InputSpec,
            options: MeasureOptions) -> ExplanationsRecord | None:
    """Every explanation method measured on up to ``options.images`` of ``held_out`` (None:
    nothing to measure on, or turned off)."""
    if options.images == 0 or len(held_out) == 0:
        return None
    import onnx
    from tqdm import tqdm

    from service.explain import Explainer, ExplainOptions, describe, survey

    indices = subset_indices(len(held_out), options.images, options.seed)
    batch = preprocess(held_out.subset(indices).images, spec)
    proto = onnx.load(str(model_path))
    explainer = Explainer(describe(metadata.name or "model", metadata, proto),
                          max_passes=ExplainOptions().max_passes)
    forward = OrtForward(proto, metadata)
    limits = survey.SurveyLimits(images=len(batch), seconds=options.seconds)
    methods = len(explainer.model.methods())
    with tqdm(total=methods * len(batch), desc="explanations", unit="map", disable=not options.progress,
              file=sys.stderr, dynamic_ncols=True, mininterval=0.5) as bar:

        def progress(method: str, count: int, offered: int) -> None:
            bar.set_postfix_str(method, refresh=False)
            bar.update(1)

        images = [batch[i : i + 1] for i in range(len(batch))]
        record = _run(survey.measure(explainer, images, forward, limits, progress))
        bar.total = bar.n  # methods the time bound stopped early skipped their other images
        bar.refresh()
    return record


class OrtForward:
    """The service's two onnxruntime sessions, as its runtime makes them: one with every
    output (the first pass, which fetches a layer) and one with the class outputs alone,
    where onnxruntime fuses the layers again (the perturbation passes). A graph with a
    fixed batch runs batches of its size, the last padded."""

    def __init__(self, proto: Any, metadata: Metadata) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4
        self.input = metadata.input.name
        self.fixed = metadata.input.fixed_batch
        self.full = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        keep = {metadata.output.name, *([metadata.output.logits] if metadata.output.logits else [])}
        lean = type(proto)()
        lean.CopyFrom(proto)
        for output in [o for o in lean.graph.output if o.name not in keep]:
            lean.graph.output.remove(output)
        self.lean = ort.InferenceSession(lean.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.lean_outputs = keep

    async def __call__(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        session = self.lean if set(outputs) <= self.lean_outputs else self.full
        if self.fixed is None:
            return list(session.run(list(outputs), {self.input: batch}))
        parts = []
        for start in range(0, len(batch), self.fixed):
            chunk = batch[start : start + self.fixed]
            padded = np.concatenate([chunk, np.zeros((self.fixed - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append([value[: len(chunk)] for value in session.run(list(outputs), {self.input: padded})])
        return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]



def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The coroutine run to its end, also when the caller is inside a running event loop (a
    notebook, a program driving a browser) where asyncio.run refuses: in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
