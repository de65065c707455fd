"""What the engine knows about a model: its input, its class output, its tapped layers, and
where Grad-CAM is exact. Built once when the model loads (``describe``); the engine never
opens the ONNX file again and never runs the model itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import onnx

from artifact import ExplanationsRecord, InputRecipe, Metadata, OutputKind
from service.explain.head import GradHead, HeadAnalysis, NotExact

# The CAM family's default layer has at least this many positions where one can (4 x 4).
CAM_POSITIONS = 16


class Method(str, Enum):
    """The explanation methods, by the name a request uses."""

    OCCLUSION = "occlusion"
    RISE = "rise"
    SCORE_CAM = "score-cam"
    GRAD_CAM = "grad-cam"
    HIRES_CAM = "hires-cam"
    EIGEN_CAM = "eigen-cam"

    @property
    def uses_layer(self) -> bool:
        """The CAM family weighs one layer's channels; the others perturb the input."""
        return self in (Method.SCORE_CAM, Method.GRAD_CAM, Method.HIRES_CAM, Method.EIGEN_CAM)

    @property
    def uses_gradient(self) -> bool:
        """Needs the exact gradient of the layers after the tapped one (head.py)."""
        return self in (Method.GRAD_CAM, Method.HIRES_CAM)


METHODS: tuple[str, ...] = tuple(m.value for m in Method)


@dataclass(frozen=True)
class LayerInfo:
    """A tapped layer as the artifact's metadata describes it (per image, no batch)."""

    name: str
    shape: tuple[int, ...]
    receptive_field: int | None = None
    stride: int | None = None
    group: str | None = None  # the block it belongs to (an import's residual, dense, inception block)

    @property
    def spatial(self) -> bool:
        """[C, h, w] with more than one position: a map of where, which the CAMs need."""
        return self.positions > 1

    @property
    def positions(self) -> int:
        return self.shape[1] * self.shape[2] if len(self.shape) == 3 else 0


@dataclass(frozen=True)
class LayerMethods:
    """One row of the layer catalogue: the CAM methods valid at this layer."""

    name: str
    shape: tuple[int, ...]
    methods: tuple[Method, ...]
    grad_cam_unavailable: str | None  # why grad-cam and hires-cam are not offered here; None where they are


@dataclass(frozen=True)
class NotRecommended:
    """A method offered for a model whose map, measured at export, beat a random map on
    fewer than RECOMMENDED of its held-out images."""

    method: Method
    share: float  # of the images measured, those where the map beat a random map
    images: int

    @property
    def why(self) -> str:
        return (f"its map beat a random map on {round(self.share * self.images)} of {self.images} held-out images "
                f"({self.share:.0%}) when measured at export, under the {RECOMMENDED:.0%} a method needs to be "
                "recommended")


@dataclass(frozen=True)
class Catalogue:
    """Which methods and layers a model allows, for ``GET /v1/models/{name}/layers`` and errors."""

    methods: tuple[Method, ...]  # every method valid for this model
    default_method: Method
    default_layer: str | None  # the deepest spatial block output (CAM methods' default)
    layers: tuple[LayerMethods, ...]  # every tapped layer, shallow to deep
    default_reason: str = ""  # why the default method is the default, in words
    measured: ExplanationsRecord | None = None  # every method measured at export; None: not measured
    # The measured methods whose map beat a random map on fewer than RECOMMENDED of
    # the held-out images: offered, but not recommended for this model.
    not_recommended: tuple[NotRecommended, ...] = ()


@dataclass(frozen=True)
class ExplainableModel:
    """Everything the engine needs about one model version."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    output: str  # the class output
    labels: tuple[str, ...]
    layers: tuple[LayerInfo, ...]  # shallow to deep
    heads: Mapping[str, GradHead | NotExact] = field(default_factory=dict)
    # The image that stands for "nothing here" in the model's normalised input space,
    # per channel [C, 1, 1]: what occlusion, RISE and Score-CAM fill removed pixels with,
    # and what faithfulness deletes to / inserts from.
    baseline: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1), dtype=np.float32))
    # What the class output holds (service.models.scores.probabilities reads it accordingly):
    # perturbation methods and faithfulness score P(target) from it, never a second softmax.
    output_kind: OutputKind = OutputKind.LOGITS
    # Every method measured on held-out images at export (artifact `explanations`): the
    # default method and the methods not recommended come from it; None: not measured.
    measured: ExplanationsRecord | None = None

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def grad_head(self, layer: str) -> GradHead | None:
        head = self.heads.get(layer)
        return head if isinstance(head, GradHead) else None

    def layer_methods(self, layer: LayerInfo) -> tuple[Method, ...]:
        if not layer.spatial:
            return ()
        methods = [Method.SCORE_CAM, Method.EIGEN_CAM]
        if self.grad_head(layer.name) is not None:
            methods[:0] = [Method.GRAD_CAM, Method.HIRES_CAM]
        return tuple(methods)

    def layers_for(self, method: Method) -> tuple[str, ...]:
        """The layers where ``method`` may run, shallow to deep."""
        return tuple(layer.name for layer in self.layers if method in self.layer_methods(layer))

    def default_layer(self, method: Method = Method.SCORE_CAM) -> str | None:
        """The deepest spatial block output where ``method`` is valid whose map has at least
        CAM_POSITIONS positions: the most semantic map that still says where (the Grad-CAM
        paper's choice, pytorch-grad-cam's `layer4` of a ResNet at 224 px: 7 x 7).

        - Blocks: in a net with blocks (an import's residual, dense, inception blocks: the
          layers' `group`) the last layer of a block, never a conv inside one, whose map is
          half of a residual sum; in a chain, any layer.
        - Positions: a 2 x 2 map (a ResNet's `layer4` at 64 px) upsampled is a single blob;
          on the zoo at 64 px score-cam and eigen-cam beat a random map far more often one
          block earlier, at 4 x 4 (benchmarks/RESULTS-explain.md). Where no valid layer has
          that many (grad-cam is exact only after the last merge of a residual net), the
          deepest valid one.
        """
        valid = self.layers_for(method)
        ends = self.block_outputs()
        outputs = [name for name in valid if name in ends] if ends else list(valid)
        fine = [name for name in outputs if self.layer(name).positions >= CAM_POSITIONS]
        chosen = fine or outputs or list(valid)
        return chosen[-1] if chosen else None

    def block_outputs(self) -> frozenset[str]:
        """The last layer of each block (``group``), where the model has blocks."""
        last: dict[str, str] = {}
        for layer in self.layers:
            if layer.group is not None:
                last[layer.group] = layer.name
        return frozenset(last.values())

    def methods(self) -> tuple[Method, ...]:
        return tuple(m for m in Method if not m.uses_layer or self.layers_for(m))

    def catalogue(self) -> Catalogue:
        rows = []
        exact = self.layers_for(Method.GRAD_CAM)
        for layer in self.layers:
            head = self.heads.get(layer.name)
            if not layer.spatial:
                why: str | None = "not a spatial layer (no map of positions)"
            elif isinstance(head, NotExact):
                why = head.reason + (f" (offered at: {', '.join(exact)})" if exact else
                                     " (no layer of this model offers it)")
            elif head is None:
                why = "the model's graph was not analysed"
            else:
                why = None
            rows.append(LayerMethods(layer.name, layer.shape, self.layer_methods(layer), why))
        valid = {m.value for m in self.methods()}
        shy = tuple(NotRecommended(Method(m.method), m.share, m.images) for m in self.measured.methods
                    if m.method in valid and m.share < RECOMMENDED) if self.measured is not None else ()
        return Catalogue(self.methods(), default_method(self), self.default_layer(), tuple(rows),
                         default_reason=default_reason(self), measured=self.measured, not_recommended=shy)


# A method whose map beat a random map on fewer than this share of a model's held-out
# images is listed as not recommended for it (issue 21); service/explain/survey.py measures.
RECOMMENDED = 0.8
# The default of a model without measurements. Occlusion needs no layer and no exact head,
# so every model allows it, and it was the most faithful on the digits models: on 30
# held-out digits (trained tinyvgg; deletion area, lower is better / insertion, higher is
# better / passes with faithfulness) occlusion 0.076 / 0.934 / 228, RISE 0.080 / 0.935 /
# 1059, score-cam 0.31 / 0.88 / 69, hires-cam 0.34 / 0.90 / 59, eigen-cam 0.57 / 0.69 / 59,
# classic grad-cam 0.81 / 0.83 / 59 (an empty map on all 30); the trained LeNet ranks them
# the same (docs/explain.md).
UNMEASURED_DEFAULT = Method.OCCLUSION


def default_method(model: ExplainableModel) -> Method:
    """The model's default method: the one chosen from its measurements at export
    (artifact `explanations`, service/explain/survey.py ``choose``) where it has them and
    the method is valid here; otherwise UNMEASURED_DEFAULT."""
    measured = _measured_default(model)
    return measured if measured is not None else UNMEASURED_DEFAULT


def default_reason(model: ExplainableModel) -> str:
    """Why ``default_method`` chose what it chose, in words."""
    if _measured_default(model) is not None:
        assert model.measured is not None
        return f"measured at export on {model.measured.images} held-out images: {model.measured.reason}"
    return ("not measured (the artifact records no explanation measurements: export or import the model with "
            "held-out images, or add them with `python -m model_export channel-view MODEL_DIR --data-dir DIR`); "
            "occlusion needs no layer and no exact gradient, so every model allows it, and it was the most "
            "faithful method on the digits models")


def _measured_default(model: ExplainableModel) -> Method | None:
    if model.measured is None or model.measured.default_method not in METHODS:
        return None
    method = Method(model.measured.default_method)
    return method if method in model.methods() else None


def describe(name: str, metadata: Metadata, model: onnx.ModelProto | str | Path,
             shared: Mapping[str, np.ndarray] | None = None) -> ExplainableModel:
    """The engine's view of an artifact (docs/artifact.md): call once when a version loads.

    ``model`` is the artifact's ONNX graph (the proto the runtime already loaded, before it
    strips outputs for the logits-only session, or the file). Analysing where Grad-CAM is
    exact reads the graph and keeps the head's weights (shared between layers).
    ``shared``: initializers already held as numpy arrays, by name (the runtime's
    ``shared_weights``, which both onnxruntime sessions read): the heads use these very
    arrays, not a copy, and they may be missing from ``model`` (detached placeholders).

    ``metadata.output.kind`` says how to read the class output (P(target) for occlusion,
    RISE, Score-CAM, faithfulness); gradient methods differentiate the scores before a final
    Softmax / LogSoftmax / Sigmoid: ``metadata.output.logits`` where the importer tapped them,
    else found in the graph.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    inp = metadata.input
    layers = tuple(
        LayerInfo(name=layer.name, shape=layer.map_shape, receptive_field=layer.receptive_field, stride=layer.stride,
                  group=layer.group)
        for layer in metadata.layers
    )
    # One image's input shape, for the graph's dimensions left open (a head may read the
    # batch size off the input: dynamo's x.view(x.size(0), -1)).
    analysis = HeadAnalysis(proto, dict(shared or {}), {inp.name: (1, *inp.shape[1:])})
    heads: dict[str, GradHead | NotExact] = {}
    for layer in layers:
        if layer.spatial:
            try:
                heads[layer.name] = analysis.head(layer.name, metadata.output.name, metadata.output.logits)
            except Exception as exc:  # an odd graph must never stop the model from loading
                heads[layer.name] = NotExact(f"the graph after this layer could not be analysed ({exc})")
    return ExplainableModel(
        name=name,
        input_shape=(inp.channels, inp.height, inp.width),
        output=metadata.output.name,
        labels=tuple(metadata.labels),
        layers=layers,
        heads=heads,
        baseline=baseline_image(inp),
        output_kind=metadata.output.kind,
        measured=metadata.explanations,
    )


def baseline_image(inp: InputRecipe) -> np.ndarray:
    """The per-channel baseline [C, 1, 1] in normalised input space: the training set's
    mean colour, which normalisation maps to 0 (the value a zero-mean network reads as
    "no signal")."""
    return np.zeros((inp.channels, 1, 1), dtype=np.float32)
