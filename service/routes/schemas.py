"""Response shapes, for the OpenAPI document at /docs. Handlers build plain dicts (the
data plane's output) and return them without a second validation pass."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from artifact import ExplanationsRecord, LayerError
from service.models.registry import ModelState


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in words a person can act on.")


class Prediction(BaseModel):
    label: str
    index: int = Field(description="Position in the model's class output.")
    probability: float


class FeatureMap(BaseModel):
    shape: list[int] = Field(description="[C, H, W] (or [F]) for one image.")
    encoding: str = Field(description="stats | png | npy | json")
    stats: dict[str, list[float]] | None = Field(None, description="encoding=stats: per-channel min, max, mean.")
    data: Any = Field(None, description="png/npy: base64 bytes; json: nested lists.")
    dtype: str | None = Field(None, description="encoding=npy: float16 or float32.")
    colormap: str | None = Field(None, description="encoding=png: the colour map of the grid.")
    range: list[float] | None = Field(None, description="encoding=png: the values mapped to the colour map's ends.")
    grid: list[int] | None = Field(None, description="encoding=png: [rows, cols] of channel tiles.")
    tile: list[int] | None = Field(None, description="encoding=png: [height, width] of one tile in pixels.")


class ImageResult(BaseModel):
    predictions: list[Prediction]
    feature_maps: dict[str, FeatureMap] | None = None


class PredictResponse(BaseModel):
    model: str
    version: int
    output_kind: str = Field(description="What the model's class output is (artifact metadata output.kind): "
                                         "logits (probabilities = their softmax), probabilities, log_probabilities "
                                         "(probabilities = exp), or multilabel (each class's own probability, "
                                         "independent of the others: they need not sum to 1).")
    predictions: list[Prediction] | None = Field(None, description="One image: best first.")
    feature_maps: dict[str, FeatureMap] | None = Field(None, description="One image: per requested layer.")
    results: list[ImageResult] | None = Field(None, description="Several images: one result each, in order.")
    timings_ms: dict[str, float] = Field(description="decode, preprocess, queue, inference, encode, total.")


class ModelVersionStatus(BaseModel):
    version: int
    state: ModelState = Field(description="loading | ready | failed | unloading | unloaded")
    reason: str | None = None
    provider: str | None = Field(None, description="onnxruntime execution provider in use.")
    load_seconds: float | None = None
    precision: str | None = Field(None, description="float32 | int8, once loaded.")
    quantized_from: int | None = Field(None, description="An int8 version's float32 version.")


class ModelSummary(BaseModel):
    name: str
    default_version: int | None
    versions: list[ModelVersionStatus]


class ModelList(BaseModel):
    models: list[ModelSummary]


class LayerInfo(BaseModel):
    name: str
    op: str | None = None
    kind: str | None = None
    group: str | None = Field(None, description="The block the layer belongs to (its residual or concatenating "
                                                "merge's module), for one row per block; null: none.")
    output_shape: list[int]
    params: int | None = None
    receptive_field: int | None = None
    stride: int | None = None
    geometry_note: str | None = Field(
        None, description="Why receptive_field is null, or the whole image with stride null (a layer that mixes every "
                          "position), or what it leaves out (a channel gate that sees the whole image); the per-axis "
                          "geometry is in the model's metadata")
    has_filters: bool
    explain_methods: list[str] = Field(description="The explanation methods that may use this layer (`layer=`): "
                                                   "the CAM family where it is a spatial map.")
    gradient_methods_unavailable: str | None = Field(
        None, description="Why grad-cam and hires-cam are not offered at this layer (their gradient would not be "
                          "exact), where they are not.")
    quantization_sqnr_db: float | None = Field(
        None, description="int8 versions: this layer's signal-to-quantization-noise ratio against the float version "
                          "over the held-out images the export judged it on (higher is closer; null: identical).")


class NotRecommendedMethod(BaseModel):
    method: str
    beats_random_share: float = Field(description="Of the held-out images it was measured on at export, the share "
                                                  "where its map beat a random map (below 0.8).")
    images: int = Field(description="How many images it was measured on.")
    why: str


class ExplainCatalogue(BaseModel):
    methods: list[str] = Field(description="Every explanation method this model allows.")
    default_method: str | None = Field(description="The method a request without `method=` gets: the one chosen from "
                                                   "the model's measurements at export where it has them.")
    default_layer: str | None = Field(description="The CAM family's default layer: the deepest spatial block output.")
    default_reason: str | None = Field(None, description="Why the default method is the default.")
    not_recommended: list[NotRecommendedMethod] = Field(
        default_factory=list, description="Methods offered but not recommended for this model: measured at export, "
                                          "their map beat a random map on fewer than 80% of the held-out images.")
    measured: ExplanationsRecord | None = Field(
        None, description="Every method as measured at export on held-out images (docs/artifact.md, `explanations`); "
                          "null: not measured.")
    unavailable: str | None = Field(None, description="Why this model cannot be explained at all, if so.")


class ColormapCatalogue(BaseModel):
    feature_maps: str = Field(description="The colour map of feature maps (PNG grids; the explorer's tiles).")
    filters: str = Field(description="The diverging colour map of filter weights (grey at zero).")
    saliency: str = Field(description="The explanation overlay's default colour map.")
    saliency_choices: list[str] = Field(description="The colour maps `colormap=` of /explain takes.")
    stops: dict[str, list[list[int]]] = Field(
        description="Each colour map by name: its [r, g, b] stops (0-255), evenly spaced over 0..1 and "
                    "interpolated linearly to the 256 entries the server paints with.")


class SpeedRow(BaseModel):
    batch: int
    float_seconds: float = Field(description="Median seconds of a logits-only run of the float version, at export.")
    int8_seconds: float
    speedup: float | None = Field(None, description="float_seconds / int8_seconds (quantization answer only).")


class QuantizeAttemptRow(BaseModel):
    float_layers: int = Field(description="How many layers that attempt kept float32.")
    agreement: float
    int8_accuracy: float | None = None


class QuantizationSummary(BaseModel):
    quantized_from: int = Field(description="The float32 version this int8 version was made from.")
    method: str = Field(description="Calibration: minmax | entropy | percentile.")
    scheme: str
    data: str | None = Field(description="Where the calibration and evaluation images came from.")
    calibration_images: int
    evaluation_images: int = Field(description="Held-out images the gate compared both versions on (none of them "
                                               "calibrated).")
    agreement: float = Field(description="Share of the evaluation images given the same top-1 class by both.")
    min_agreement: float = Field(description="The gate it passed.")
    float_accuracy: float | None = Field(description="Top-1 accuracy of the float version on those images (null: "
                                                     "no labels the model knows).")
    int8_accuracy: float | None
    max_probability_difference: float
    speed: list[SpeedRow] = Field(description="Timed at export on the exporting machine's CPU.")
    int8_faster: bool | None = Field(description="At the largest batch timed.")
    seconds: float | None = Field(description="What quantizing cost.")
    float_layers: list[str] = Field(
        default_factory=list, description="Layers (or the class output) whose nodes stayed float32: those adding the "
                                          "most quantization noise, kept float because int8 everywhere missed the gate.")
    attempts: list[QuantizeAttemptRow] = Field(
        default_factory=list, description="Every quantization the export tried, in order; the last one is this version.")


class FloatVersion(BaseModel):
    version: int
    state: str | None = Field(description="Its state in this server (loading | ready | failed | unloading | "
                                          "unloaded); null: not in the repository.")
    served: bool = Field(description="Ready here: its maps can be compared with the int8 version's.")


class QuantizationAnswer(QuantizationSummary):
    model: str
    version: int
    precision: str = Field(description="int8.")
    layers: list[LayerError] = Field(description="Every tapped layer, shallow to deep, then the class output.")
    worst_layers: list[str] = Field(description="The (at most) three tapped layers with the lowest SQNR, worst first.")
    float_version: FloatVersion


class LayerList(BaseModel):
    model: str
    version: int
    precision: str = Field(description="float32 | int8.")
    fixed_batch: int | None = Field(None, description="The graph runs exactly this many images a run (an import "
                                                      "whose batch could not be made dynamic); null: any batch.")
    layers: list[LayerInfo]
    colormaps: ColormapCatalogue
    explanations: ExplainCatalogue
    quantization: QuantizationSummary | None = Field(
        None, description="int8 versions: how it was quantized and what the gate measured (every layer's error: "
                          "GET .../quantization); null for float32.")


class ExplainTarget(BaseModel):
    index: int = Field(description="Position in the model's class output.")
    label: str
    probability: float = Field(description="The model's softmax probability of this class for the image.")


class SaliencyMap(BaseModel):
    shape: list[int] = Field(description="[H, W]: the model's input resolution, aligned with the preprocessed input.")
    encoding: str = Field(description="json | npy | png")
    data: Any = Field(None, description="json: nested lists of floats in 0..1, higher = more evidence for the "
                                        "target; npy: base64 .npy (float32); png: base64 PNG overlay.")
    dtype: str | None = Field(None, description="encoding=npy: float32.")
    colormap: str | None = Field(None, description="encoding=png: the heat's colour map.")
    alpha: float | None = Field(None, description="encoding=png: the heat's opacity where the map is 1.")
    range: list[float] | None = Field(None, description="encoding=png: the map values at the colour map's ends.")
    scale: int | None = Field(None, description="encoding=png: the whole factor small inputs are enlarged by.")
    size: list[int] | None = Field(None, description="encoding=png: [height, width] of the picture.")


class FaithfulnessScores(BaseModel):
    deletion: float = Field(description="Area under P(target) as the map's top pixels are removed (0..1): lower "
                                        "is better.")
    insertion: float = Field(description="Area under P(target) as they are revealed from the baseline: higher is "
                                         "better.")
    random_deletion: float = Field(description="Deletion in a random pixel order: chance.")
    beats_random: bool = Field(description="deletion < random_deletion, for a map that ranks pixels at all (an "
                                           "empty or uniform map never does).")
    note: str | None = Field(None, description="How to read the scores when the map does not beat chance.")
    steps: int
    baseline: str = Field(description="What removed pixels are replaced with.")
    deletion_curve: list[float]
    insertion_curve: list[float]
    random_deletion_curve: list[float]


class ExplainResponse(BaseModel):
    model: str
    version: int
    method: str = Field(description="occlusion | rise | score-cam | grad-cam | hires-cam | eigen-cam")
    layer: str | None = Field(None, description="The layer the CAM family used; null for occlusion and rise.")
    target: ExplainTarget
    forward_passes: int = Field(description="Forward passes made, all included.")
    budget: int = Field(description="The most passes this explanation was allowed.")
    map: SaliencyMap
    note: str | None = Field(None, description="Set when the map says nothing (empty or uniform).")
    faithfulness: FaithfulnessScores | None = Field(None, description="null with faithfulness=false.")
    parameters: dict[str, Any] = Field(description="What the method did: windows, masks, channels, weighting.")
    timings_ms: dict[str, float] = Field(description="decode, preprocess, queue and inference (summed over the "
                                                     "passes), engine (its numpy work), encode, total.")


# -- what each channel detects ---------------------------------------------------------------

class Position(BaseModel):
    y: int
    x: int


class Box(BaseModel):
    left: int
    top: int
    right: int = Field(description="Exclusive.")
    bottom: int = Field(description="Exclusive.")


class TopEntry(BaseModel):
    rank: int = Field(description="0 = the strongest.")
    activation: float = Field(description="The channel's maximum over this image.")
    label: str = Field(description="The image's class in the held-out set; for images from a flat folder, the "
                                   "model's own top-1 class (then `score` is its probability).")
    image: int = Field(description="The image's index in the held-out split the export ranked.")
    position: Position | None = Field(description="Where the maximum is in the layer's map; null for a flat layer.")
    box: Box | None = Field(description="The input pixels that unit sees (its receptive field, clipped to the "
                                        "image); null where the geometry is unknown.")
    crop: bool = Field(description="true: the picture is the box's pixels only; false: the whole input.")
    score: float | None = Field(None, description="The model's probability of `label` where the model captioned "
                                                  "the image (a flat folder of images); null: a true label.")
    image_url: str = Field(description="The stored picture (PNG, the model's input size and colour mode).")


class ChannelAnswer(BaseModel):
    layer: str
    channel: int
    images: int = Field(description="How many held-out images were ranked.")
    top: list[TopEntry] = Field(description="Activation descending.")
    top_png_url: str = Field(description="The top images as one picture, each with its box and label.")


class Sample(BaseModel):
    id: int
    label: str = Field(description="The image's class; for samples from a flat folder, the model's own top-1.")
    score: float | None = Field(None, description="The model's probability of `label` where the model captioned "
                                                  "the image; null: a true label.")
    image_url: str


class SampleList(BaseModel):
    samples: list[Sample]


class ChannelFilterAnswer(BaseModel):
    layer: str
    channel: int
    conv: str | None = Field(description="The conv module whose filter made this channel.")
    shape: list[int] = Field(description="[in_channels, kernel_height, kernel_width].")
    reads_image: bool = Field(description="The conv reads the input image itself (the first layer): with 3 input "
                                          "channels the filter is a colour picture.")
    trained: list[list[list[float]]] = Field(description="The kernel as trained.")
    initial: list[list[list[float]]] | None = Field(description="The kernel when training began (null: not "
                                                                "recorded, no initial_weights.npz).")



ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)
}
