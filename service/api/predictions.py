"""v1's answers: class probabilities, the top k, feature maps in the asked-for encoding,
and a model's metadata. Shaping lives here, next to the API it serves; the data plane only
runs the model."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service import encoding as enc
from service.dataplane import DataPlane, ImageInputs, Timings
from service.encoding import Encoding, NpyDtype
from service.registry import ServedModel


@dataclass(frozen=True)
class PredictQuery:
    top_k: int = 5
    layers: tuple[str, ...] = ()  # as given: names, comma-separated names, or "all"
    encoding: Encoding = Encoding.STATS
    dtype: NpyDtype = NpyDtype.FLOAT32


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float64]:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def top_k_predictions(probabilities: NDArray[np.float64], labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """[{label, index, probability}], best first (ties to the lower index), for one image."""
    best = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "probability": float(probabilities[i])} for i in best]


async def predict(plane: DataPlane, model: ServedModel, images: list[bytes],
                  query: PredictQuery) -> tuple[dict[str, Any], Timings]:
    """Class predictions for each image and, when asked, the chosen layers' feature maps."""
    signature = model.signature
    layers = plane.select_layers(signature, query.layers)
    plane.check_count(len(images))
    if layers:
        plane.check_budget(signature, layers, len(images), query.encoding, query.dtype)
    result = await plane.run(model, ImageInputs(images), (signature.output_name, *layers))
    timings = result.timings
    encode_started = time.perf_counter()
    maps = [result.outputs[name] for name in layers]
    per_image = await plane.offload(
        _per_image, signature.labels, result.outputs[signature.output_name], layers, maps, query,
        size=sum(m.size for m in maps),
    )
    timings.encode = time.perf_counter() - encode_started
    body: dict[str, Any] = {"model": model.name, "version": model.version}
    if len(per_image) == 1:
        body.update(per_image[0])
    else:
        body["results"] = per_image
    return body, timings


def _per_image(labels: Sequence[str], logits: NDArray[np.float32], layers: list[str],
               maps: list[NDArray[np.float32]], query: PredictQuery) -> list[dict[str, Any]]:
    probabilities = softmax(logits)
    out = []
    for i in range(probabilities.shape[0]):
        item: dict[str, Any] = {"predictions": top_k_predictions(probabilities[i], labels, query.top_k)}
        if layers:
            item["feature_maps"] = {
                name: enc.encode_feature_map(values[i], query.encoding, query.dtype)
                for name, values in zip(layers, maps)
            }
        out.append(item)
    return out


def model_metadata(model: ServedModel, versions: list[int]) -> dict[str, Any]:
    runtime = model.runtime
    out = runtime.metadata.to_json()
    out.update(name=runtime.name, version=runtime.version, provider=runtime.provider, available_versions=versions)
    return out


LAYER_KEYS = ("name", "op", "kind", "output_shape", "params", "receptive_field", "stride", "geometry_note")


def layer_catalogue(model: ServedModel) -> dict[str, Any]:
    """The layer names valid for ``layers=``, shallow to deep, with what each shows and
    which explanation methods may use it (``layer=`` of /explain), and the colour maps the
    server paints with (the explorer reads them here)."""
    runtime = model.runtime
    layers = [{**{k: getattr(layer, k) for k in LAYER_KEYS}, "has_filters": layer.name in runtime.filters}
              for layer in runtime.metadata.layers]
    body: dict[str, Any] = {"model": runtime.name, "version": runtime.version, "layers": layers,
                            "colormaps": enc.colormap_catalogue()}
    if model.explainer is None:
        for layer in layers:
            layer["explain_methods"] = []
        body["explanations"] = {"methods": [], "default_method": None, "default_layer": None,
                                "unavailable": runtime.explain_unavailable}
        return body
    catalogue = model.explainer.model.catalogue()
    rows = {row.name: row for row in catalogue.layers}
    for layer in layers:
        row = rows.get(layer["name"])
        layer["explain_methods"] = [m.value for m in row.methods] if row is not None else []
        if row is not None and row.grad_cam_unavailable is not None:
            layer["gradient_methods_unavailable"] = row.grad_cam_unavailable
    body["explanations"] = {
        "methods": [m.value for m in catalogue.methods],
        "default_method": catalogue.default_method.value,
        "default_layer": catalogue.default_layer,
        "unavailable": None,
    }
    return body
