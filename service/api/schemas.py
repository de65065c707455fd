"""Response shapes, for the OpenAPI document at /docs. Handlers build plain dicts (the
data plane's output) and return them without a second validation pass."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    predictions: list[Prediction] | None = Field(None, description="One image: best first.")
    feature_maps: dict[str, FeatureMap] | None = Field(None, description="One image: per requested layer.")
    results: list[ImageResult] | None = Field(None, description="Several images: one result each, in order.")
    timings_ms: dict[str, float] = Field(description="decode, preprocess, queue, inference, encode, total.")


class ModelVersionStatus(BaseModel):
    version: int
    state: str = Field(description="loading | ready | failed")
    reason: str | None = None
    provider: str | None = Field(None, description="onnxruntime execution provider in use.")
    load_seconds: float | None = None


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
    output_shape: list[int]
    params: int | None = None
    receptive_field: int | None = None
    stride: int | None = None
    has_filters: bool


class LayerList(BaseModel):
    model: str
    version: int
    layers: list[LayerInfo]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 503)
}
