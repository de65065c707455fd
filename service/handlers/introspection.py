"""Looking inside a version without running it: its metadata, its layers and what each
allows, its filters, what each channel detects (the channel view made at export) and the
sample images to start from. Everything here is read from memory loaded with the version."""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from artifact import Precision
from service.codecs.pictures import top_sheet
from service.errors import NotFound, NotQuantized
from service.handlers.base import Handler, ref
from service.handlers.results import (
    ChannelFilter,
    ChannelTop,
    Filters,
    LayerCatalogue,
    Picture,
    QuantizationReport,
    Samples,
    VersionDescription,
)
from service.models.registry import ModelRegistry, ModelStatus

# A first sheet of top images draws k patches with Pillow (tens of ms at 224 px): big
# enough to run off the event loop.
SHEET_WORK = 1 << 20


class FilterState(StrEnum):
    TRAINED = "trained"  # the learned kernels
    INITIAL = "initial"  # the random kernels before training (initial_weights.npz)


class IntrospectionHandler(Handler):
    def __init__(self, registry: ModelRegistry) -> None:
        super().__init__(registry)

    def models(self) -> list[ModelStatus]:
        """Every model, its versions and their states."""
        return self._registry.status()

    def describe(self, name: str, version: int | None) -> VersionDescription:
        with self.holding(name, version) as model:
            return VersionDescription(ref(model), model.metadata, model.signature, model.runtime.provider,
                                      self._registry.versions(name))

    def layers(self, name: str, version: int | None) -> LayerCatalogue:
        with self.holding(name, version) as model:
            runtime = model.runtime
            explainer = model.explainer
            return LayerCatalogue(
                model=ref(model),
                layers=model.metadata.layers,
                with_filters=frozenset(runtime.filters),
                explanations=explainer.model.catalogue() if explainer is not None else None,
                unexplainable=runtime.explain_unavailable if explainer is None else None,
                precision=model.metadata.precision,
                quantization=model.metadata.quantization,
                fixed_batch=model.metadata.input.fixed_batch,
            )

    def quantization(self, name: str, version: int | None) -> QuantizationReport:
        """An int8 version's record; 404 for a float32 one, naming the model's int8 versions."""
        with self.holding(name, version) as model:
            record = model.metadata.quantization
            status = self._registry.model_status(model.name)
            if record is None:
                raise NotQuantized(model.name, model.version,
                                   [v.version for v in status.versions if v.precision == Precision.INT8.value])
            state = next((v.state.value for v in status.versions if v.version == record.quantized_from), None)
            return QuantizationReport(ref(model), record, state)

    def filters(self, name: str, version: int | None, layer: str, state: FilterState = FilterState.TRAINED) -> Filters:
        """A conv layer's kernels, as trained or as initialised before training."""
        with self.holding(name, version) as model:
            runtime = model.runtime
            trained = runtime.trained_filters(layer)
            weights = trained if state is FilterState.TRAINED else runtime.initial_filters.get(layer)
            if weights is None:
                raise NotFound(
                    f"model {model.name} version {model.version} has no record of its filters before "
                    "training (exported without initial_weights.npz); use state=trained"
                )
            return Filters(ref(model), layer, weights)

    def channel_filter(self, name: str, version: int | None, layer: str, channel: int) -> ChannelFilter:
        """The kernel that made one channel: a person can read one filter of a deep layer,
        never all of them at once."""
        with self.holding(name, version) as model:
            runtime = model.runtime
            trained = runtime.trained_filters(layer)
            if not 0 <= channel < trained.shape[0]:
                raise NotFound(f"layer {layer!r} of model {model.name} has {trained.shape[0]} channels; "
                               f"valid: 0..{trained.shape[0] - 1}, not {channel}")
            initial = runtime.initial_filters.get(layer)
            first = next(n for n in runtime.layer_names if n in runtime.filters)
            return ChannelFilter(
                model=ref(model), layer=layer, channel=channel, conv=model.metadata.layer(layer).conv,
                reads_image=layer == first and trained.shape[1] == model.spec.channels,
                trained=np.asarray(trained[channel]),
                initial=None if initial is None else np.asarray(initial[channel]),
            )

    def channel(self, name: str, version: int | None, layer: str, channel: int) -> ChannelTop:
        with self.holding(name, version) as model:
            view = model.channel_view
            return ChannelTop(ref(model), layer, channel, view.images, view.top(layer, channel))

    def top_sheet(self, name: str, version: int | None, layer: str, channel: int) -> Picture:
        """A channel's top images as one picture, made once per version and then cached."""
        with self.holding(name, version) as model:
            view = model.channel_view
            stored = view.top_pictures(layer, channel)
            return Picture(ref(model), lambda: view.rendered(("top", layer, channel), lambda: top_sheet(stored)),
                           SHEET_WORK)

    def top_image(self, name: str, version: int | None, layer: str, channel: int, rank: int) -> Picture:
        with self.holding(name, version) as model:
            png = model.channel_view.top_image(layer, channel, rank)
            return Picture(ref(model), lambda: png, 0)

    def samples(self, name: str, version: int | None) -> Samples:
        with self.holding(name, version) as model:
            return Samples(ref(model), model.channel_view.samples(), model.channel_view.sample_scores())

    def sample(self, name: str, version: int | None, sample_id: int) -> Picture:
        with self.holding(name, version) as model:
            png = model.channel_view.sample_image(sample_id)
            return Picture(ref(model), lambda: png, 0)
