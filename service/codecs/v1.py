"""The v1 API's JSON answers, rendered from the handlers' results. Pure: no model, no
request; what a URL in an answer points at comes from the routes (``Links``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from artifact import ExplanationsRecord, QuantizationRecord
from service.codecs import colormaps
from service.codecs.arrays import Encoding, MapEncoding, NpyDtype, encode_feature_map, encode_saliency
from service.codecs.pictures import input_image, png_bytes, saliency_overlay
from service.explain import Faithfulness
from service.handlers.results import (
    ChannelFilter,
    ChannelTop,
    Explained,
    LayerCatalogue,
    Predictions,
    QuantizationReport,
    Samples,
    VersionDescription,
)
from service.models.registry import ModelStatus

LAYER_KEYS = ("name", "op", "kind", "group", "output_shape", "params", "receptive_field", "stride",
              "geometry_note")


class Links(Protocol):
    """Where a version's pictures live: the routes' own paths, versioned so they can be
    cached for good."""

    def top_image(self, layer: str, channel: int, rank: int) -> str: ...

    def top_sheet(self, layer: str, channel: int) -> str: ...

    def sample(self, sample_id: int) -> str: ...


# -- predictions ------------------------------------------------------------------------------

def top_k(scores: NDArray[np.float64], labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """[{label, index, probability}], best first (ties to the lower index), for one image."""
    best = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "probability": float(scores[i])} for i in best]


def predictions(result: Predictions, k: int, encoding: Encoding, dtype: NpyDtype) -> dict[str, Any]:
    """``/predict``'s answer: one image's fields at the top level, several as ``results``."""
    per_image = []
    for i in range(result.scores.shape[0]):
        item: dict[str, Any] = {"predictions": top_k(result.scores[i], result.labels, k)}
        if result.maps:
            item["feature_maps"] = {name: encode_feature_map(values[i], encoding, dtype)
                                    for name, values in result.maps.items()}
        per_image.append(item)
    body: dict[str, Any] = {"model": result.model.name, "version": result.model.version,
                            "output_kind": result.kind.value}
    if len(per_image) == 1:
        body.update(per_image[0])
    else:
        body["results"] = per_image
    return body


# -- models -----------------------------------------------------------------------------------

def models(statuses: list[ModelStatus]) -> dict[str, Any]:
    return {"models": statuses}  # dataclasses: the JSON response renders them as objects


def description(result: VersionDescription) -> dict[str, Any]:
    """A version's metadata as exported, with where it runs and its model's versions."""
    out = result.metadata.to_json()
    out.update(name=result.model.name, version=result.model.version, provider=result.provider,
               available_versions=result.available_versions)
    return out


def layer_catalogue(result: LayerCatalogue) -> dict[str, Any]:
    """The layer names valid for ``layers=``, shallow to deep, with what each shows and
    which explanation methods may use it (``layer=`` of /explain), and the colour maps the
    server paints with (the explorer reads them here)."""
    layers = [{**{k: getattr(layer, k) for k in LAYER_KEYS}, "has_filters": layer.name in result.with_filters}
              for layer in result.layers]
    errors = {row.name: row for row in result.quantization.layers} if result.quantization is not None else {}
    for layer in layers:
        error = errors.get(layer["name"])
        if error is not None:
            layer["quantization_sqnr_db"] = error.sqnr_db
    body: dict[str, Any] = {"model": result.model.name, "version": result.model.version,
                            "precision": result.precision.value, "fixed_batch": result.fixed_batch, "layers": layers,
                            "colormaps": colormaps.catalogue(),
                            "quantization": quantization_summary(result.quantization)}
    catalogue = result.explanations
    if catalogue is None:
        for layer in layers:
            layer["explain_methods"] = []
        body["explanations"] = {"methods": [], "default_method": None, "default_layer": None,
                                "default_reason": None, "not_recommended": [], "measured": None,
                                "unavailable": result.unexplainable}
        return body
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
        "default_reason": catalogue.default_reason,
        "not_recommended": [{"method": m.method.value, "beats_random_share": m.share, "images": m.images,
                             "why": m.why} for m in catalogue.not_recommended],
        "measured": _measured(catalogue.measured),
        "unavailable": None,
    }
    return body


def _measured(record: ExplanationsRecord | None) -> dict[str, Any] | None:
    """The export's measurements of each method, as the artifact records them."""
    return None if record is None else record.to_json()


# -- int8 versions ----------------------------------------------------------------------------

WORST_LAYERS = 3


def quantization_summary(record: QuantizationRecord | None) -> dict[str, Any] | None:
    """The gate's figures without the per-layer table (the catalogue's and the list's)."""
    if record is None:
        return None
    body = record.to_json()
    del body["layers"]
    return body


def quantization(result: QuantizationReport) -> dict[str, Any]:
    """An int8 version's record: the gate's figures, the speed timed at export, every tapped
    layer's error then the class output's, the worst layers named, and whether the float
    version serves here too."""
    record = result.record
    body: dict[str, Any] = {"model": result.model.name, "version": result.model.version, "precision": "int8"}
    body.update(record.to_json())
    for row in body["speed"]:
        row["speedup"] = round(row["float_seconds"] / row["int8_seconds"], 3) if row["int8_seconds"] else None
    tapped = [row for row in record.layers[:-1] if row.sqnr_db is not None]
    body["worst_layers"] = [row.name for row in sorted(tapped, key=lambda row: row.sqnr_db or 0.0)[:WORST_LAYERS]]
    body["float_version"] = {"version": record.quantized_from, "state": result.float_state,
                             "served": result.float_state == "ready"}
    return body


# -- channels ---------------------------------------------------------------------------------

def _named(keys: tuple[str, ...], values: tuple[int, ...] | None) -> dict[str, int] | None:
    return None if values is None else dict(zip(keys, values, strict=True))


def channel(result: ChannelTop, links: Links) -> dict[str, Any]:
    """The held-out images that excite one channel most, activation descending."""
    layer, index = result.layer, result.channel
    return {
        "layer": layer,
        "channel": index,
        "images": result.images,
        "top": [
            {
                "rank": entry.rank,
                "activation": entry.activation,
                "label": entry.label,
                "image": entry.image,
                "position": _named(("y", "x"), entry.position),
                "box": _named(("left", "top", "right", "bottom"), entry.box),
                "crop": entry.crop,
                "score": entry.score,
                "image_url": links.top_image(layer, index, entry.rank),
            }
            for entry in result.top
        ],
        "top_png_url": links.top_sheet(layer, index),
    }


def samples(result: Samples, links: Links) -> dict[str, Any]:
    scores: list[float | None] = list(result.scores) if result.scores is not None else [None] * len(result.labels)
    return {"samples": [{"id": i, "label": label, "score": score, "image_url": links.sample(i)}
                        for i, (label, score) in enumerate(zip(result.labels, scores, strict=True))]}


def _rounded(kernel: NDArray[np.float32]) -> list[list[list[float]]]:
    # Six significant digits are more than a picture needs and keep the answer short.
    values: list[list[list[float]]] = np.vectorize(lambda v: float(f"{v:.6g}"))(kernel).tolist()
    return values


def channel_filter(result: ChannelFilter) -> dict[str, Any]:
    return {
        "layer": result.layer,
        "channel": result.channel,
        "conv": result.conv,
        "shape": list(result.trained.shape),
        "reads_image": result.reads_image,
        "trained": _rounded(result.trained),
        "initial": None if result.initial is None else _rounded(result.initial),
    }


# -- explanations -----------------------------------------------------------------------------

def _input_image(done: Explained) -> NDArray[np.uint8]:
    spec = done.spec
    return input_image(done.result.image, spec.mean, spec.std, spec.scale)


def explanation_map(done: Explained, encoding: MapEncoding, colormap: str) -> dict[str, Any]:
    """The map in the asked-for encoding (png: heat over the image the model saw)."""
    saliency = done.result.explanation.map
    if encoding is MapEncoding.PNG:
        return encode_saliency(saliency, "png", _input_image(done), colormap)
    return encode_saliency(saliency, encoding.value)


def overlay_png(done: Explained, colormap: str) -> tuple[bytes, dict[str, Any]]:
    """The map as heat over the image the model saw (a PNG), and how it was drawn."""
    rgb, info = saliency_overlay(_input_image(done), done.result.explanation.map, colormap)
    return png_bytes(rgb), info


def faithfulness(scores: Faithfulness | None) -> dict[str, Any] | None:
    if scores is None:
        return None
    return {
        "deletion": scores.deletion,
        "insertion": scores.insertion,
        "random_deletion": scores.random_deletion,
        "beats_random": scores.beats_random,
        "note": scores.note,
        "steps": scores.steps,
        "baseline": "the training set's mean colour (0 after normalisation)",
        "deletion_curve": list(scores.deletion_curve),
        "insertion_curve": list(scores.insertion_curve),
        "random_deletion_curve": list(scores.random_deletion_curve),
    }


def explanation(done: Explained, encoded_map: dict[str, Any]) -> dict[str, Any]:
    result = done.result.explanation
    target = result.target
    return {
        "model": done.model.name,
        "version": done.model.version,
        "method": result.method.value,
        "layer": result.layer,
        "target": {"index": target.index, "label": target.label, "probability": target.probability},
        "forward_passes": result.forward_passes,
        "budget": result.budget,
        "map": encoded_map,
        "note": result.note,
        "faithfulness": faithfulness(result.faithfulness),
        "parameters": dict(result.parameters),
    }


def explanation_summary(done: Explained) -> str:
    """The answer without the map or curves, for the PNG answer's X-Convscope-Explanation header."""
    body = explanation(done, {})
    del body["map"]
    scores = body["faithfulness"]
    if scores is not None:
        body["faithfulness"] = {k: v for k, v in scores.items() if not k.endswith("_curve")}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def explanation_timings(done: Explained) -> dict[str, float]:
    return {**done.result.timings.as_ms(), "engine": round(done.result.engine_seconds * 1000.0, 3)}
