"""Running a model: v1 predictions with feature maps, one layer's maps for a picture, and
Open Inference Protocol requests. Each holds the version for the call, checks the request
against it before any work, runs it through the data plane and returns the result."""

from __future__ import annotations

import time
from collections.abc import Sequence

from service.codecs import oip
from service.codecs.arrays import Encoding, NpyDtype, estimate_bytes
from service.errors import UnknownLayer
from service.handlers.base import Handler, ref
from service.handlers.results import FeatureMap, Inference, Predictions
from service.inference.dataplane import DataPlane, ImageInputs, Inputs, TensorInputs
from service.inference.limits import RequestLimits
from service.inference.workers import Workers
from service.models.registry import ModelRegistry
from service.models.scores import probabilities
from service.models.signature import ModelSignature


def select_layers(signature: ModelSignature, names: Sequence[str]) -> list[str]:
    """Layer names from a query (each may be comma separated, or ``all``), in order and
    without repeats; an unknown one is a 404 that lists the valid ones."""
    wanted = [part.strip() for name in names for part in name.split(",") if part.strip()]
    if "all" in wanted:
        return signature.layer_names
    for layer in wanted:
        if layer not in signature.layer_names:
            raise UnknownLayer(signature.name, layer, signature.layer_names)
    return list(dict.fromkeys(wanted))


class InferenceHandler(Handler):
    def __init__(self, registry: ModelRegistry, plane: DataPlane, workers: Workers, limits: RequestLimits) -> None:
        super().__init__(registry)
        self._plane = plane
        self._workers = workers
        self._limits = limits

    async def predict(self, name: str | None, version: int | None, images: list[bytes], layers: Sequence[str] = (),
                      encoding: Encoding = Encoding.STATS, dtype: NpyDtype = NpyDtype.FLOAT32) -> Predictions:
        """Class scores for each image and, when asked, the chosen layers' feature maps
        (``encoding`` and ``dtype`` size the answer, which is refused up front when too big)."""
        with self.holding(name, version) as model:
            signature = model.signature
            chosen = select_layers(signature, layers)
            self._limits.check_images(len(images))
            if chosen:
                self._check_maps(signature, chosen, len(images), encoding, dtype)
            result = await self._plane.run(model, ImageInputs(images), (signature.output_name, *chosen))
            output = model.metadata.output
            return Predictions(
                model=ref(model),
                labels=signature.labels,
                kind=output.kind,
                scores=probabilities(result.outputs[signature.output_name], output.kind),
                maps={layer: result.outputs[layer] for layer in chosen},
                timings=result.timings,
            )

    async def feature_map(self, name: str, version: int | None, layer: str, image: bytes) -> FeatureMap:
        """One layer's maps for one image."""
        with self.holding(name, version) as model:
            select_layers(model.signature, [layer])
            result = await self._plane.run(model, ImageInputs([image]), (layer,))
            return FeatureMap(ref(model), layer, result.outputs[layer][0], result.timings)

    async def infer(self, name: str, version: int | None, body: bytes, content_encoding: str | None,
                    header_length: str | None) -> Inference:
        """An Open Inference Protocol request, parsed against the version it is for."""
        with self.holding(name, version) as model:
            signature = model.signature
            started = time.perf_counter()
            parsed = await self._workers.parse(self._parse, body, content_encoding, header_length, signature,
                                               size=len(body))
            parse_seconds = time.perf_counter() - started
            layers = parsed.layers(signature)
            if layers:
                encoding = Encoding.NPY if parsed.binary_layers(signature) else Encoding.JSON
                self._check_maps(signature, layers, parsed.batch_size, encoding, NpyDtype.FLOAT32)
            inputs: Inputs = ImageInputs(parsed.data) if isinstance(parsed.data, list) else TensorInputs(parsed.data)
            result = await self._plane.run(model, inputs, parsed.run_outputs(signature))
            result.timings.decode += parse_seconds  # reading the body is this protocol's decoding
            return Inference(ref(model), signature, parsed, result.outputs, result.timings)

    def _parse(self, body: bytes, content_encoding: str | None, header_length: str | None,
               signature: ModelSignature) -> oip.InferenceRequest:
        body = oip.decompress(body, content_encoding, self._limits.max_body_bytes)
        return oip.parse_request(body, header_length, signature, self._limits.check_images, self._limits.max_images)

    def _check_maps(self, signature: ModelSignature, layers: Sequence[str], images: int, encoding: Encoding,
                    dtype: NpyDtype) -> None:
        estimate = images * sum(estimate_bytes(signature.layer_shape(n), encoding, dtype) for n in layers)
        self._limits.check_feature_maps(estimate, encoding)
