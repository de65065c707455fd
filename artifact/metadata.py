"""metadata.json as types: the one description of a model version that the export stage
writes and the service reads (docs/artifact.md is this module in prose, and a test holds
the two together).

Every field an older artifact may lack has a default, so versions written before a field
existed keep loading. Fields this module does not know are kept as they are (a newer
writer's additions survive a read and show in the model's metadata), but never used.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of every part of metadata.json: unknown keys kept, values validated on read."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """As written in metadata.json: every field, in declaration order, nulls included."""
        return self.model_dump(mode="json")


class Layout(StrEnum):
    NCHW = "NCHW"


class InputRecipe(Record):
    """How an encoded image becomes the model's input tensor: decode, convert to
    ``color_mode``, resize to ``size`` with ``resize``, multiply by ``scale``, then
    ``(x - mean) / std`` per channel, laid out as ``layout``."""

    name: str = "input"
    shape: list[int] = Field(description="[-1, C, H, W]; -1 is the dynamic batch (fixed_batch: a number)")
    layout: Layout = Layout.NCHW
    dtype: Literal["float32"] = "float32"
    channels: Literal[1, 3]
    color_mode: Literal["L", "RGB"] | None = None
    size: tuple[PositiveInt, PositiveInt] = Field(description="[height, width] in pixels")
    resize: str = "bilinear"
    scale: PositiveFloat
    mean: list[float]
    std: list[PositiveFloat]
    fixed_batch: PositiveInt | None = Field(
        None, description="The graph runs only batches of exactly this many images (null: any batch)")

    @model_validator(mode="before")
    @classmethod
    def _shape_from_size(cls, data: Any) -> Any:
        """``shape`` says again what ``channels`` and ``size`` say: derived when left out."""
        if isinstance(data, dict) and "shape" not in data and "size" in data and "channels" in data:
            size = data["size"]
            if isinstance(size, (list, tuple)) and len(size) == 2:
                data = {**data, "shape": [data.get("fixed_batch") or -1, data["channels"], *size]}
        return data

    @model_validator(mode="after")
    def _per_channel(self) -> InputRecipe:
        for key in ("mean", "std"):
            if len(getattr(self, key)) != self.channels:
                raise ValueError(f"input.{key} must list one number per channel ({self.channels})")
        return self

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]


class OutputKind(StrEnum):
    """What the class output holds, decided from the graph at export (or by the user)."""

    LOGITS = "logits"  # scores before a softmax: probabilities are softmax(scores)
    PROBABILITIES = "probabilities"  # the graph ends in Softmax: served as they are
    LOG_PROBABILITIES = "log_probabilities"  # the graph ends in LogSoftmax: exp() of them
    MULTILABEL = "multilabel"  # the graph ends in Sigmoid: one independent score per class


class ClassOutput(Record):
    name: str
    shape: list[int] | None = None
    kind: OutputKind = OutputKind.LOGITS
    logits: str | None = Field(
        None, description="A graph output holding the scores before the final Softmax, LogSoftmax or "
                          "Sigmoid, where the graph has one (explanations target it); null otherwise")


class Layer(Record):
    """A tapped layer: a graph output of that name, one image's map ``output_shape[1:]``."""

    name: str
    op: str | None = None
    kind: str = "other"  # conv | pool | activation | linear | merge | other: what the map shows
    conv: str | None = None  # the conv whose filters made this map
    weight: str | None = None  # the ONNX initializer of those filters
    kernel_size: list[int] | None = None
    out_channels: int | None = None
    in_channels: int | None = None
    output_shape: Annotated[list[int], Field(min_length=2)]
    params: int | None = None
    receptive_field: int | None = None
    stride: int | None = None
    receptive_field_offset: int | None = None
    receptive_field_hw: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="[rows, columns] where they differ from each other (null: the square fields say both)")
    stride_hw: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="[rows, columns] where rows and columns differ")
    receptive_field_offset_hw: tuple[int, int] | None = Field(
        None, description="[rows, columns] where rows and columns differ")
    receptive_field_bounds: tuple[int, int, int, int] | None = Field(
        None, description="[left, top, right, bottom] (exclusive) input pixels the layer's units see at all, "
                          "where that is less than the image: boxes are clipped to it")
    geometry_note: str | None = Field(
        None, description="Why receptive_field is null or the whole image where it is (a layer that mixes every "
                          "position), or what the field leaves out (a channel gate that sees the whole image)")
    group: str | None = Field(None, description="The block this layer belongs to, for one row per block")

    @property
    def map_shape(self) -> tuple[int, ...]:
        """One image's output, without the batch dimension."""
        return tuple(self.output_shape[1:])


class ModuleParams(Record):
    name: str
    type: str
    params: int


class Params(Record):
    total: int
    conv: int
    dense: int
    other: int
    dense_fraction: float | None = None
    per_module: list[ModuleParams] = Field(default_factory=list)


class Parity(Record):
    images: int | None = None
    tolerance: float | None = None
    passed: bool | None = None
    criterion: str | None = None
    max_abs_diff: dict[str, float] = Field(default_factory=dict)


class EpochRecord(Record):
    epoch: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float | None = None


class Training(Record):
    """How a training export made the weights (null for an import)."""

    dataset: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    threads: int | None = None  # torch intra-op threads: runs repeat exactly per count
    seconds: float | None = None
    accuracy: float | None = None  # final held-out figures; null when untrained
    loss: float | None = None
    history: list[EpochRecord] = Field(default_factory=list)
    weights: str | None = None  # the path given to --weights


class Versions(Record):
    torch: str | None = None
    torchvision: str | None = None
    onnx: str | None = None
    onnxruntime: str | None = None
    opset: int | None = None
    convscope: str | None = None


Captions = Literal["labels", "predictions"]


class ChannelViewRecord(Record):
    file: str
    images: int
    top_k: int
    layers: list[str] = Field(default_factory=list)
    pictures: dict[str, int] = Field(default_factory=dict)
    seconds: float | None = None
    captions: Captions = Field(
        "labels", description="labels: each image's class is its folder's (an ImageFolder); predictions: the "
                              "model's own top-1 and its probability (a flat folder of images)")


class SamplesRecord(Record):
    file: str
    count: int
    per_class: int
    captions: Captions = Field("labels", description="As the channel view's: labels or predictions")


class Precision(StrEnum):
    """What the weights and activations of model.onnx compute in."""

    FLOAT32 = "float32"
    INT8 = "int8"  # static QDQ: int8 weights per channel, int8 activations, float32 at the edges


class CalibrationMethod(StrEnum):
    """How an int8 version chose each activation's range from the calibration images."""

    MINMAX = "minmax"  # the smallest and largest value seen
    ENTROPY = "entropy"  # the range whose int8 histogram loses least information (KL divergence)
    PERCENTILE = "percentile"  # the 0.001st to 99.999th percentile of the values seen


class LayerError(Record):
    """How far one output of the int8 version is from its float version's, over the
    evaluation images: signal-to-quantization-noise ratio and relative error."""

    name: str  # a tapped layer, or the class output
    sqnr_db: float | None = Field(description="10 log10(sum float^2 / sum (float - int8)^2); null: no difference")
    relative_error: float = Field(description="||float - int8|| / ||float||, over every value of every image")
    worst_channel: int | None = None  # the lowest SQNR among channels carrying at least 1% of the
    # layer's average channel power (a nearly silent channel rounded to zero is 0 dB); null: flat
    worst_channel_sqnr_db: float | None = None


class SpeedRecord(Record):
    """One timed comparison at export: median seconds of a logits-only run of each version."""

    batch: PositiveInt
    float_seconds: float
    int8_seconds: float


class QuantizeAttempt(Record):
    """One quantization the export tried: how many layers it kept float32, what it measured."""

    float_layers: NonNegativeInt
    agreement: float = Field(ge=0, le=1)
    int8_accuracy: float | None = None


class QuantizationRecord(Record):
    """How an int8 version was made from its float version, and what the gate measured."""

    quantized_from: PositiveInt  # the float32 version of the same model
    method: CalibrationMethod
    scheme: str = "static QDQ; weights int8 per channel (symmetric), activations int8 per tensor (asymmetric)"
    data: str | None = None  # where the images came from
    calibration_images: PositiveInt
    evaluation_images: PositiveInt  # held out from calibration too
    agreement: float = Field(ge=0, le=1, description="share of evaluation images given the same top-1 class")
    min_agreement: float = Field(ge=0, le=1, description="the gate the version passed")
    float_accuracy: float | None = None  # top-1 on the evaluation images; null without labels
    int8_accuracy: float | None = None
    max_probability_difference: float = Field(ge=0, description="largest |p_float - p_int8| of any class, any image")
    layers: list[LayerError] = Field(default_factory=list)  # every tapped layer, then the class output
    float_layers: list[str] = Field(
        default_factory=list, description="Tapped layers (or the class output: the classifier after the last "
                                          "tapped layer) whose nodes stayed float32: those adding the most "
                                          "quantization noise, kept float when int8 everywhere missed the gate")
    attempts: list[QuantizeAttempt] = Field(
        default_factory=list, description="Every quantization tried, in order; the last one is this version")
    speed: list[SpeedRecord] = Field(default_factory=list)
    int8_faster: bool | None = None  # at the largest batch timed, on the exporting machine's CPU
    seconds: float | None = None  # what the step cost
class Source(Record):
    """Where an imported model came from and what the import rewrote (null for a training
    export): the file as it came, so a user can tell what they are looking at."""

    file: str = Field(description="The imported file's name")
    producer: str | None = Field(None, description="producer_name and producer_version the file names")
    exporter: str | None = Field(
        None, description="torch.onnx (dynamo) | torch.onnx (TorchScript) | the producer's name (tf2onnx, ...)")
    opset: int | None = None
    ir_version: int | None = None
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="The original input's layout")
    dtype: Literal["float32", "float16"] = Field("float32", description="The original input's element type")
    batch: int | None = Field(None, description="The original input's fixed batch (null: dynamic)")
    external_data: bool = Field(False, description="Its weights were in external data files (now inside model.onnx)")
    rewrites: list[str] = Field(default_factory=list, description="What the import changed at the graph's edges")


class MethodMeasurement(Record):
    """One explanation method measured on a model's held-out images (the service's engine,
    its default settings and layer, faithfulness on): how often its map beat a random map,
    what it cost."""

    method: str = Field(description="occlusion | rise | score-cam | grad-cam | hires-cam | eigen-cam")
    layer: str | None = Field(None, description="The layer it ran at (the CAM family's default layer); null: none")
    images: int = Field(description="Images explained (fewer than offered where the time ran out)")
    beats_random: int = Field(description="Of which the map beat a random map (deletion below the random map's)")
    share: float = Field(description="beats_random / images")
    passes: int = Field(description="Forward passes per explanation, faithfulness included (the most of any image)")
    median_seconds: float = Field(description="Median seconds per explanation on the machine that measured")
    failed: int = Field(0, description="Of the images, those on which the method failed (the service answers "
                                       "them with an error): never counted as beating a random map")
    deletion: float | None = Field(None, description="Mean deletion area (lower: the map's top pixels matter more)")
    random_deletion: float | None = Field(None, description="Mean deletion area of a random map (chance)")


class ExplanationsRecord(Record):
    """Every explanation method measured at export on held-out images, and the default
    method chosen from those measurements (why, in words): the service's default for this
    model, and the methods it lists as not recommended for it."""

    images: int = Field(description="Held-out images offered to each method")
    seconds: float = Field(description="What measuring cost, all methods")
    cpus: int | None = Field(None, description="CPUs of the machine that measured")
    load_average: float | None = Field(None, description="Its 1-minute load average when measuring began")
    methods: list[MethodMeasurement] = Field(default_factory=list)
    default_method: str = Field(description="The method chosen as this model's default")
    reason: str = Field(description="Why, from the measurements")


class DerivedFrom(Record):
    """A version made from another of the same model by adding what it lacked
    (`python -m model_export channel-view`): the same model.onnx, new views."""

    version: int = Field(description="The version whose model (and other files) this one copies")
    data_dir: str | None = Field(None, description="The folder of images the additions were computed from")
    added: list[str] = Field(default_factory=list, description="What this version adds: channel_view, samples, "
                                                               "explanations")


class FileRecord(Record):
    sha256: str
    bytes: int | None = None


class Metadata(Record):
    """metadata.json of one version."""

    schema_version: Literal[1]
    name: str | None = None
    version: int | None = None
    created: str | None = None
    arch: str | None = None
    description: str | None = None
    model_file: str = "model.onnx"
    labels: Annotated[list[str], Field(min_length=1)]
    input: InputRecipe
    output: ClassOutput
    layers: list[Layer]
    params: Params | None = None
    training: Training | None = None
    parity: Parity | None = None
    versions: Versions | None = None
    channel_view: ChannelViewRecord | None = None
    samples: SamplesRecord | None = None
    precision: Precision = Precision.FLOAT32
    quantization: QuantizationRecord | None = None  # int8 versions only
    source: Source | None = None
    explanations: ExplanationsRecord | None = None
    derived_from: DerivedFrom | None = None
    files: Annotated[dict[str, FileRecord], Field(min_length=1)]

    @model_validator(mode="after")
    def _names_unique(self) -> Metadata:
        seen = {self.output.name}
        if self.output.logits is not None:
            seen.add(self.output.logits)
        for layer in self.layers:
            if layer.name in seen:
                raise ValueError(f"layer name {layer.name!r} is used twice")
            seen.add(layer.name)
        if self.model_file not in self.files:
            raise ValueError(f"model_file {self.model_file!r} is not listed under files")
        if (self.precision is Precision.INT8) != (self.quantization is not None):
            raise ValueError("an int8 version needs its quantization record, and only an int8 version has one "
                             f"(precision {self.precision.value})")
        return self

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]
