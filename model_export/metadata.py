"""metadata.json (docs/artifact.md), built in one place for both ways into an artifact.

Training export (pipeline.py) and ONNX import (onnx_import.py) know different things
about a model, but the document they write is one contract, ``artifact.Metadata``: each
gathers its facts and hands them to `build`, so a field is named, ordered and typed the
same whichever way the model came in. Torch-free on purpose: the import path must not
need torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any, Literal

from artifact import (
    MODEL_FILE,
    SCHEMA_VERSION,
    ClassOutput,
    ExplanationsRecord,
    FileRecord,
    Layer,
    Metadata,
    ModuleParams,
    OutputKind,
    Params,
    Parity,
    Source,
    Training,
    Versions,
)

from .channel_view import Stored
from .preprocessing import InputSpec
from .staging import utc_now

ParamGroup = Literal["conv", "dense", "other"]
GROUPS: tuple[ParamGroup, ...] = ("conv", "dense", "other")


@dataclass(frozen=True)
class ParamCount:
    """The parameters one module (or ONNX node) owns, and which side of the
    conv-vs-dense split they fall on."""

    name: str
    type: str
    params: int
    group: ParamGroup


def param_summary(counts: Iterable[ParamCount]) -> Params:
    """metadata `params`: total, the conv/dense/other split and the per-module list."""
    owners = [c for c in counts if c.params > 0]
    split: dict[str, int] = {group: sum(c.params for c in owners if c.group == group) for group in GROUPS}
    total = sum(split.values())
    return Params(
        total=total,
        conv=split["conv"],
        dense=split["dense"],
        other=split["other"],
        dense_fraction=split["dense"] / total if total else 0.0,
        per_module=[ModuleParams(name=c.name, type=c.type, params=c.params) for c in owners],
    )


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def package_versions(opset: int | None, with_torch: bool = True) -> Versions:
    """metadata `versions`: what wrote the artifact (torch null for an import)."""
    return Versions(
        torch=_version("torch") if with_torch else None,
        torchvision=_version("torchvision") if with_torch else None,
        onnx=_version("onnx"),
        onnxruntime=_version("onnxruntime") or _version("onnxruntime-gpu"),
        opset=opset,
        convscope=_version("convscope"),
    )


def opset_of(model: Any) -> int | None:
    """The default-domain opset an onnx.ModelProto imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


@dataclass
class ModelFacts:
    """Everything metadata.json says about one model, gathered by either path."""

    name: str
    arch: str  # registry key, or "imported"
    description: str
    labels: list[str]
    input: InputSpec
    input_name: str
    output_name: str
    layers: list[Layer]
    params: Params
    parity: Parity
    opset: int | None
    training: Training | None = None  # None for an import
    with_torch: bool = True
    views: Stored = field(default_factory=Stored)  # channel view and samples, where stored
    output_kind: OutputKind = OutputKind.LOGITS
    output_logits: str | None = None  # the graph output with the scores before a final Softmax
    fixed_batch: int | None = None  # an import whose graph runs only batches of this size
    source: Source | None = None  # an import: the file as it came and what was rewritten
    explanations: ExplanationsRecord | None = None  # every explanation method measured (explanations.py)


def provisional(facts: ModelFacts) -> Metadata:
    """The metadata as it will be, before the version's number and files are known: what
    measuring explanations reads (the input, the class output, the layers)."""
    return build(facts, 1, {MODEL_FILE: FileRecord(sha256="")})


def build(facts: ModelFacts, version: int, files: dict[str, FileRecord]) -> Metadata:
    """The metadata document of version ``version`` holding ``files`` (known only when the
    version is committed: staging.Staging.commit), validated against the contract."""
    return Metadata(
        schema_version=SCHEMA_VERSION,
        name=facts.name,
        version=version,
        created=utc_now(),
        arch=facts.arch,
        description=facts.description,
        model_file=MODEL_FILE,
        labels=list(facts.labels),
        input=facts.input.to_recipe(facts.input_name, facts.fixed_batch),
        output=ClassOutput(name=facts.output_name, shape=[facts.fixed_batch or -1, len(facts.labels)],
                           kind=facts.output_kind, logits=facts.output_logits),
        layers=facts.layers,
        params=facts.params,
        training=facts.training,
        parity=facts.parity,
        versions=package_versions(facts.opset, with_torch=facts.with_torch),
        channel_view=facts.views.channel_view,
        samples=facts.views.samples,
        source=facts.source,
        explanations=facts.explanations,
        files=files,
    )
