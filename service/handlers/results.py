"""What the handlers return: one typed result per operation, everything a codec needs to
render the answer and nothing of the version it came from (which goes back to the
registry when the handler returns)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from artifact import Layer, Metadata, OutputKind, Precision, QuantizationRecord
from service.codecs.oip import InferenceRequest
from service.explain import Catalogue
from service.inference.dataplane import ExplainResult, Timings
from service.inference.preprocessing import InputSpec
from service.models.channel_view import TopImage
from service.models.signature import ModelSignature


@dataclass(frozen=True)
class ModelRef:
    """Which version answered, and a digest of its files (for ETags: another export under
    the same number changes it)."""

    name: str
    version: int
    digest: str = ""


@dataclass(frozen=True)
class Predictions:
    """Class scores (what a user reads: probabilities, or independent scores for a
    multi-label model) and the asked-for feature maps, one row per image."""

    model: ModelRef
    labels: tuple[str, ...]
    kind: OutputKind
    scores: NDArray[np.float64]  # [N, classes]
    maps: dict[str, NDArray[np.float32]]  # layer -> [N, ...], in the order asked
    timings: Timings


@dataclass(frozen=True)
class FeatureMap:
    """One layer's maps for one image."""

    model: ModelRef
    layer: str
    values: NDArray[np.float32]  # [C, H, W] or [F]
    timings: Timings


@dataclass(frozen=True)
class Inference:
    """An Open Inference Protocol request and the outputs it asked for."""

    model: ModelRef
    signature: ModelSignature
    request: InferenceRequest
    outputs: dict[str, NDArray[np.float32]]
    timings: Timings


@dataclass(frozen=True)
class Explained:
    """One image explained by one version."""

    model: ModelRef
    result: ExplainResult
    spec: InputSpec  # the version's input recipe: the overlay undoes its normalisation


@dataclass(frozen=True)
class Filters:
    """A conv layer's kernels [O, I, kh, kw], as trained or before training."""

    model: ModelRef
    layer: str
    weights: NDArray[np.float32]


@dataclass(frozen=True)
class ChannelFilter:
    """The kernel that made one channel, as trained and (where recorded) before training."""

    model: ModelRef
    layer: str
    channel: int
    conv: str | None
    reads_image: bool  # the conv reads the input image itself: 3 channels make a colour picture
    trained: NDArray[np.float32]  # [I, kh, kw]
    initial: NDArray[np.float32] | None


@dataclass(frozen=True)
class VersionDescription:
    """A version's metadata, where it runs, and the versions of its model."""

    model: ModelRef
    metadata: Metadata
    signature: ModelSignature
    provider: str
    available_versions: list[int]


@dataclass(frozen=True)
class LayerCatalogue:
    """The tapped layers, which have filters, and which explanation methods each allows;
    for an int8 version, how it was quantized and each layer's error."""

    model: ModelRef
    layers: Sequence[Layer]
    with_filters: frozenset[str]
    explanations: Catalogue | None  # None: the model cannot be explained ...
    unexplainable: str | None  # ... for this reason
    precision: Precision = Precision.FLOAT32
    quantization: QuantizationRecord | None = None
    fixed_batch: int | None = None  # the graph runs exactly this many images a run (an import's)


@dataclass(frozen=True)
class QuantizationReport:
    """How an int8 version was made from its float version, what the gate measured, every
    layer's error; and whether that float version serves here too (side by side)."""

    model: ModelRef
    record: QuantizationRecord
    float_state: str | None  # the float version's state in this server; None: not in it


@dataclass(frozen=True)
class ChannelTop:
    """The held-out images that excite one channel most."""

    model: ModelRef
    layer: str
    channel: int
    images: int  # how many held-out images were ranked
    top: list[TopImage]


@dataclass(frozen=True)
class Samples:
    """A few held-out images per class: their labels, by id."""

    model: ModelRef
    labels: list[str]
    scores: list[float] | None = None  # the model's probability of each label, where it captioned them


@dataclass(frozen=True)
class Picture:
    """A PNG of the version (a stored picture, or one made from it on demand): ``make``
    gives the bytes, so a client that holds it already (its ETag) costs no rendering."""

    model: ModelRef
    make: Callable[[], bytes]
    size: int  # roughly how much work ``make`` is (values it touches), for where it runs
