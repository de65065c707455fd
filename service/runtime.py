"""onnxruntime sessions for one artifact.

Each model gets two sessions over the same weights:

- a *logits-only* session, built from the graph with every output but the class output
  removed. onnxruntime will not fuse a Conv with its activation when the Conv's output is
  a graph output, and a session with many outputs stays slower even when asked for one,
  so predictions without feature maps take this path and run at full speed;
- a *features* session over the full graph, for requests that ask for feature maps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.preprocessing import InputSpec
from service.repository import Artifact

log = logging.getLogger("convscope.runtime")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(requested: list[str] | None) -> list[str]:
    """The execution providers to ask for: the setting, else CUDA when present, else CPU."""
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ValueError(
                f"execution provider(s) {', '.join(unknown)} are not in this onnxruntime "
                f"build; available: {', '.join(available)}"
            )
        return list(requested)
    return [CUDA, CPU] if CUDA in available else [CPU]


@dataclass
class RuntimeOptions:
    providers: list[str]
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads keep a core busy after each run; on a small box that core is the
        # one decoding the next request.
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        if self.inter_op_threads:
            options.inter_op_num_threads = self.inter_op_threads
        options.log_severity_level = 3  # onnxruntime's warnings go to stderr, not our logs
        return options


@dataclass
class ModelRuntime:
    """A loaded artifact: its sessions, its input recipe and its layers."""

    artifact: Artifact
    spec: InputSpec
    logits_session: ort.InferenceSession
    features_session: ort.InferenceSession
    provider: str
    input_name: str
    output_name: str
    layer_names: list[str]
    filters: dict[str, np.ndarray] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> int:
        return self.artifact.version

    @property
    def metadata(self) -> dict[str, Any]:
        return self.artifact.metadata

    @property
    def labels(self) -> list[str]:
        return self.artifact.metadata["labels"]

    def layer(self, name: str) -> dict[str, Any]:
        for layer in self.metadata["layers"]:
            if layer["name"] == name:
                return layer
        raise KeyError(name)

    def run(self, batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        """Run one batch; ``outputs`` names what to return, in that order.

        Only the class output: the fused logits-only session. Anything else: the
        features session. Called from a worker thread, never the event loop.
        """
        session = self.logits_session if outputs == (self.output_name,) else self.features_session
        return session.run(list(outputs), {self.input_name: batch})


def load_model(artifact: Artifact, options: RuntimeOptions) -> ModelRuntime:
    """Open both sessions for an artifact, check them against its metadata, warm them up."""
    started = time.perf_counter()
    metadata = artifact.metadata
    spec = InputSpec.from_metadata(metadata["input"])
    proto = onnx.load(str(artifact.model_path))
    output_name = metadata["output"]["name"]
    input_name = metadata["input"]["name"]

    graph_outputs = [o.name for o in proto.graph.output]
    layer_names = [layer["name"] for layer in metadata["layers"]]
    missing = [n for n in [output_name, *layer_names] if n not in graph_outputs]
    if missing:
        raise ValueError(f"the ONNX graph lacks output(s) named in metadata: {', '.join(missing)}")
    graph_inputs = [i.name for i in proto.graph.input]
    if input_name not in graph_inputs:
        raise ValueError(f"the ONNX graph has no input {input_name!r} (it has {graph_inputs})")

    filters = _conv_filters(proto, metadata["layers"])

    session_options = options.session_options()
    features_session = ort.InferenceSession(
        proto.SerializeToString(), sess_options=session_options, providers=options.providers
    )
    # The fast path: the same graph with the class output alone.
    keep = [o for o in proto.graph.output if o.name == output_name]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    logits_session = ort.InferenceSession(
        proto.SerializeToString(), sess_options=session_options, providers=options.providers
    )
    del proto

    model = ModelRuntime(
        artifact=artifact,
        spec=spec,
        logits_session=logits_session,
        features_session=features_session,
        provider=logits_session.get_providers()[0],
        input_name=input_name,
        output_name=output_name,
        layer_names=layer_names,
        filters=filters,
    )
    _warm_up(model)
    model.load_seconds = time.perf_counter() - started
    return model


def _warm_up(model: ModelRuntime) -> None:
    """One run through each session: first-run allocations happen now, not in a request,
    and a graph whose shapes disagree with its metadata fails here, at load."""
    batch = np.zeros((1, *model.spec.shape), dtype=np.float32)
    (logits,) = model.run(batch, (model.output_name,))
    if logits.shape != (1, len(model.labels)):
        raise ValueError(
            f"the class output has shape {list(logits.shape)} for one image, but metadata "
            f"lists {len(model.labels)} labels"
        )
    if model.layer_names:
        maps = model.run(batch, tuple(model.layer_names))
        for name, value in zip(model.layer_names, maps):
            expected = model.layer(name)["output_shape"][1:]
            if list(value.shape[1:]) != list(expected):
                raise ValueError(
                    f"layer {name} yields shape {list(value.shape[1:])} per image; "
                    f"metadata says {expected}"
                )


def _layers_by_weight(layers: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each kernel initializer and every layer that shows it: a Conv and the ReLU after
    it are two layers over one set of kernels, and both must show them."""
    by_weight: dict[str, list[str]] = {}
    for layer in layers:
        if layer.get("weight"):
            by_weight.setdefault(layer["weight"], []).append(layer["name"])
    return by_weight


def _conv_filters(proto: onnx.ModelProto, layers: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The learned kernels behind each conv layer, keyed by layer name."""
    wanted = _layers_by_weight(layers)
    found: dict[str, np.ndarray] = {}
    for initializer in proto.graph.initializer:
        if initializer.name in wanted:
            array = numpy_helper.to_array(initializer)
            if array.ndim == 4:
                for name in wanted[initializer.name]:
                    found[name] = array.astype(np.float32, copy=False)
    return found


def load_initial_filters(artifact: Artifact) -> dict[str, np.ndarray]:
    """Kernels before training (initial_weights.npz), keyed by layer name."""
    if artifact.initial_weights_path is None:
        return {}
    by_weight = _layers_by_weight(artifact.metadata["layers"])
    with np.load(artifact.initial_weights_path, allow_pickle=False) as data:
        return {
            name: np.asarray(data[key], dtype=np.float32)
            for key in data.files
            for name in by_weight.get(key, [])
        }
