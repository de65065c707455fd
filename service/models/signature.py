"""What a model takes and gives, read from its artifact's metadata: the one description the
protocol codecs need, with no session, batcher or registry behind it."""

from __future__ import annotations

from dataclasses import dataclass

from artifact import Metadata


@dataclass(frozen=True)
class LayerSignature:
    name: str
    shape: tuple[int, ...]  # one image's output, without the batch dimension


@dataclass(frozen=True)
class ModelSignature:
    name: str
    version: int
    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    output_name: str
    labels: tuple[str, ...]
    layers: tuple[LayerSignature, ...]

    @classmethod
    def from_metadata(cls, name: str, version: int, metadata: Metadata) -> ModelSignature:
        inp = metadata.input
        return cls(
            name=name,
            version=version,
            input_name=inp.name,
            input_shape=(inp.channels, inp.height, inp.width),
            output_name=metadata.output.name,
            labels=tuple(metadata.labels),
            layers=tuple(LayerSignature(layer.name, layer.map_shape) for layer in metadata.layers),
        )

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def output_names(self) -> list[str]:
        """Every output a request may ask for: the class output, then each layer."""
        return [self.output_name, *self.layer_names]

    def layer_shape(self, name: str) -> tuple[int, ...]:
        for layer in self.layers:
            if layer.name == name:
                return layer.shape
        raise KeyError(name)
