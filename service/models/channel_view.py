"""What each channel detects: the held-out images that excite it most, and sample images.

The export stage ranks held-out images through the model and stores, per tapped layer
and channel, the top-k images by the channel's maximum activation with the position of
that maximum, the box of input pixels it sees and the pixels to show it
(channel_view.npz), plus a few held-out images per class (samples.npz); docs/artifact.md
has the format. This module reads both once, when a model version loads, and answers
from memory: one channel's top images, each picture as stored, the samples; the codecs
make JSON and the sheet of top images from these (codecs/v1.py, codecs/pictures.py).
numpy only.

Artifacts written before the channel view existed (or exported with
--channel-images 0, or imported without --data-dir) have neither file: they serve as
before, and asking for a channel view says it was not computed and how to compute it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from artifact import ArtifactError, Metadata
from service.errors import NotFound, one_of
from service.models.repository import Artifact

MEDIA_TYPE = "image/png"  # every stored picture and sample is a PNG
RENDER_CACHE = 256  # top.png pictures kept per model version
_TOP_LEVEL_KEYS = (
    "layers", "classes", "image_index", "image_label",
    "picture_data", "picture_offsets", "picture_origin", "picture_crop",
)


class NotComputed(NotFound):
    """The artifact has no channel view (or no samples): nothing to find, and how to make it."""

    def __init__(self, model: str, version: int, what: str) -> None:
        if what == "channel view":
            how = (
                "it was not computed at export. Export the model again (`python -m model_export "
                "...` computes it by default; --channel-images N sets how many held-out images are "
                "ranked, 0 turns it off), or for an imported model run `python -m model_export import "
                "FILE --data-dir DIR` with a folder of labelled images (DIR/<class>/<image>)"
            )
        else:
            how = (
                "none were stored at export. Every training export stores them (`python -m "
                "model_export ...`); an import stores them when given --data-dir DIR"
            )
        super().__init__(f"model {model} version {version} has no {what}: {how}")


@dataclass(frozen=True)
class TopImage:
    """One of the images that excite a channel most."""

    rank: int  # 0 = the strongest
    activation: float  # the channel's maximum over this image
    label: str  # the image's class in the held-out set, or the model's top-1 (score set)
    image: int  # its index in the held-out split the export ranked
    position: tuple[int, int] | None  # (y, x) of the maximum in the layer's map; None: flat layer
    box: tuple[int, int, int, int] | None  # (left, top, right, bottom) input pixels it sees
    crop: bool  # the stored picture is the box's pixels only (else the whole input)
    picture: int  # which stored picture shows it
    score: float | None = None  # the model's probability of `label`, where the model captioned it (a flat folder)


@dataclass(frozen=True)
class StoredPicture:
    """A top image and the picture that shows it: its PNG bytes and where the picture's
    top-left corner lies in input pixels (a crop starts inside the image)."""

    entry: TopImage
    png: bytes
    origin: tuple[int, ...]  # (left, top)


class _Pictures:
    """Concatenated PNG bytes with their offsets; picture i is one slice."""

    def __init__(
        self, data: np.ndarray, offsets: np.ndarray, where: str, origin: np.ndarray | None = None,
        crop: np.ndarray | None = None,
    ) -> None:
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != data.size:
            raise ArtifactError(f"{where}: picture offsets do not match the picture data")
        if np.any(np.diff(offsets) <= 0):
            raise ArtifactError(f"{where}: picture offsets must increase")
        count = len(offsets) - 1
        self.origin = np.zeros((count, 2), dtype=np.int32) if origin is None else origin
        self.crop = np.zeros(count, dtype=bool) if crop is None else crop.astype(bool)
        if self.origin.shape != (count, 2) or self.crop.shape != (count,):
            raise ArtifactError(f"{where}: one origin and one crop flag per picture expected")
        self._data = data.tobytes()
        self._offsets = [int(x) for x in offsets]

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        return self._data[self._offsets[index] : self._offsets[index + 1]]


@dataclass(frozen=True)
class _LayerTable:
    """One layer's stored top-k table, (channels, k) arrays."""

    activation: np.ndarray  # float32
    image: np.ndarray  # int32, into the ranked images
    position: np.ndarray  # int32 (C, k, 2): y, x; -1 for a flat layer
    box: np.ndarray  # int32 (C, k, 4): left, top, right, bottom; -1 where unknown
    picture: np.ndarray  # int32, into the pictures

    @property
    def channels(self) -> int:
        return int(self.activation.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.activation.shape[1])


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path.name} cannot be read: {exc}") from None


def _require(arrays: dict[str, np.ndarray], keys: list[str], where: str) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ArtifactError(f"{where} lacks {', '.join(missing)}")


@dataclass(frozen=True)
class _Ranking:
    """channel_view.npz in memory: the tables, the ranked images' labels, the pictures."""

    tables: dict[str, _LayerTable]
    pictures: _Pictures
    classes: list[str]
    image_index: np.ndarray  # (N,) held-out index of each ranked image
    image_label: np.ndarray  # (N,) its class, into `classes`
    image_score: np.ndarray | None  # (N,) the model's probability of that class (a flat folder); None: labels

    @classmethod
    def load(cls, path: Path, known_layers: set[str]) -> _Ranking:
        arrays = _load_npz(path)
        _require(arrays, list(_TOP_LEVEL_KEYS), path.name)
        pictures = _Pictures(
            arrays["picture_data"], arrays["picture_offsets"], path.name, arrays["picture_origin"], arrays["picture_crop"]
        )
        images = len(arrays["image_index"])
        if arrays["image_label"].shape != (images,):
            raise ArtifactError(f"{path.name}: one label per ranked image expected")
        scores = arrays.get("image_score")
        if scores is not None and scores.shape != (images,):
            raise ArtifactError(f"{path.name}: one score per ranked image expected")
        tables: dict[str, _LayerTable] = {}
        for j, name in enumerate(str(n) for n in arrays["layers"]):
            if name not in known_layers:
                raise ArtifactError(f"{path.name} ranks layer {name!r}, which metadata does not list")
            tables[name] = _table(arrays, j, name, images, len(pictures), path.name)
        classes = [str(c) for c in arrays["classes"]]
        return cls(tables, pictures, classes, arrays["image_index"], arrays["image_label"], scores)

    def label(self, image: int) -> str:
        index = int(self.image_label[image])
        return self.classes[index] if 0 <= index < len(self.classes) else str(index)


class ChannelView:
    """One model version's channel view and samples, loaded once; either may be absent."""

    def __init__(self, model: str, version: int, ranking: _Ranking | None, samples: _Samples | None) -> None:
        self.model = model
        self.version = version
        self._ranking = ranking
        self._samples = samples
        self._renders: dict[tuple[object, ...], bytes] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> ChannelView:
        return cls.load(artifact.ref.path, artifact.metadata, model=artifact.name, version=artifact.version)

    @classmethod
    def load(cls, directory: Path, metadata: Metadata, *, model: str, version: int) -> ChannelView:
        """Read channel_view.npz and samples.npz where metadata lists them (metadata
        `channel_view` / `samples`; absent or null: not stored).

        Raises ArtifactError when a listed file is inconsistent (the checksums in
        metadata.json were verified already, so this is a writer bug, said at load).
        """
        view_section, samples_section = metadata.channel_view, metadata.samples
        known = set(metadata.layer_names)
        ranking = _Ranking.load(directory / view_section.file, known) if view_section else None
        samples = _Samples.load(directory / samples_section.file) if samples_section else None
        return cls(model, version, ranking, samples)

    # --- what it holds ---------------------------------------------------------------

    @property
    def computed(self) -> bool:
        return self._ranking is not None

    @property
    def has_samples(self) -> bool:
        return self._samples is not None

    @property
    def images(self) -> int:
        """How many held-out images were ranked."""
        return 0 if self._ranking is None else len(self._ranking.image_index)

    @property
    def layers(self) -> list[str]:
        return [] if self._ranking is None else list(self._ranking.tables)

    def top(self, layer: str, channel: int) -> list[TopImage]:
        """The channel's top images, activation descending."""
        table = self._table(layer)
        self._check_channel(layer, table, channel)
        return [self._entry(table, channel, rank) for rank in range(table.top_k)]

    # --- what the handlers ask for ---------------------------------------------------

    def top_image(self, layer: str, channel: int, rank: int) -> bytes:
        """One of the channel's top images as stored (PNG: the whole input or the crop)."""
        table = self._table(layer)
        self._check_channel(layer, table, channel)
        if not 0 <= rank < table.top_k:
            raise NotFound(
                f"channel {channel} of layer {layer!r} keeps {table.top_k} top images; "
                f"valid ranks: 0..{table.top_k - 1}, not {rank}"
            )
        return self._pictures()[int(table.picture[channel, rank])]

    def top_pictures(self, layer: str, channel: int) -> list[StoredPicture]:
        """The channel's top images with the stored picture of each, for a sheet of them."""
        pictures = self._pictures()
        return [StoredPicture(entry, pictures[entry.picture], tuple(int(v) for v in pictures.origin[entry.picture]))
                for entry in self.top(layer, channel)]

    def rendered(self, key: tuple[object, ...], render: Callable[[], bytes]) -> bytes:
        """A picture made from this view (a sheet of top images), made once per key: the
        view never changes while the version is loaded."""
        with self._lock:
            made = self._renders.get(key)
        if made is None:
            made = render()
            with self._lock:
                self._renders[key] = made
                while len(self._renders) > RENDER_CACHE:
                    self._renders.pop(next(iter(self._renders)))
        return made

    def samples(self) -> list[str]:
        """The sample images' labels, by id."""
        return list(self._sample_set().labels)

    def sample_scores(self) -> list[float] | None:
        """The model's probability of each sample's label, where the model captioned them
        (samples from a flat folder); None where the labels are the images' own."""
        return self._sample_set().scores

    def sample_image(self, sample_id: int) -> bytes:
        """One sample as stored (PNG, the model's size and mode)."""
        samples = self._sample_set()
        if not 0 <= sample_id < len(samples.labels):
            raise NotFound(
                f"unknown sample {sample_id} of model {self.model}; valid: 0..{len(samples.labels) - 1}"
            )
        return samples.pictures[sample_id]

    # --- internals -------------------------------------------------------------------

    def _computed(self) -> _Ranking:
        if self._ranking is None:
            raise NotComputed(self.model, self.version, "channel view")
        return self._ranking

    def _pictures(self) -> _Pictures:
        return self._computed().pictures

    def _table(self, layer: str) -> _LayerTable:
        tables = self._computed().tables
        if layer not in tables:
            raise NotFound(one_of("layer", layer, tables) + f" (the layers of model {self.model})")
        return tables[layer]

    def _check_channel(self, layer: str, table: _LayerTable, channel: int) -> None:
        if not 0 <= channel < table.channels:
            raise NotFound(
                f"layer {layer!r} of model {self.model} has {table.channels} channels; "
                f"valid: 0..{table.channels - 1}, not {channel}"
            )

    def _entry(self, table: _LayerTable, channel: int, rank: int) -> TopImage:
        ranking = self._computed()
        image = int(table.image[channel, rank])
        position = table.position[channel, rank]
        box = table.box[channel, rank]
        picture = int(table.picture[channel, rank])
        return TopImage(
            rank=rank,
            activation=float(table.activation[channel, rank]),
            label=ranking.label(image),
            image=int(ranking.image_index[image]),
            position=(int(position[0]), int(position[1])) if position[0] >= 0 else None,
            box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])) if box[0] >= 0 else None,
            crop=bool(ranking.pictures.crop[picture]),
            picture=picture,
            score=None if ranking.image_score is None else float(ranking.image_score[image]),
        )

    def _sample_set(self) -> _Samples:
        if self._samples is None:
            raise NotComputed(self.model, self.version, "sample images")
        return self._samples


def _table(arrays: dict[str, np.ndarray], j: int, name: str, images: int, pictures: int, where: str) -> _LayerTable:
    keys = [f"{j}.{key}" for key in ("activation", "image", "position", "box", "picture")]
    _require(arrays, keys, where)
    table = _LayerTable(*(arrays[k] for k in keys))
    shape = table.activation.shape
    if (
        len(shape) != 2
        or table.image.shape != shape
        or table.picture.shape != shape
        or table.position.shape != (*shape, 2)
        or table.box.shape != (*shape, 4)
    ):
        raise ArtifactError(f"{where}: the tables of layer {name!r} disagree in shape")
    if table.image.size and (table.image.min() < 0 or table.image.max() >= images):
        raise ArtifactError(f"{where}: layer {name!r} names images outside 0..{images - 1}")
    if table.picture.size and (table.picture.min() < 0 or table.picture.max() >= pictures):
        raise ArtifactError(f"{where}: layer {name!r} names pictures outside 0..{pictures - 1}")
    return table


@dataclass(frozen=True)
class _Samples:
    """samples.npz in memory: a few held-out images per class and their labels."""

    labels: list[str]
    pictures: _Pictures
    scores: list[float] | None = None  # the model's probability of each label, where it captioned them

    @classmethod
    def load(cls, path: Path) -> _Samples:
        arrays = _load_npz(path)
        _require(arrays, ["classes", "label", "data", "offsets"], path.name)
        classes = [str(c) for c in arrays["classes"]]
        labels = [classes[int(i)] if 0 <= int(i) < len(classes) else str(int(i)) for i in arrays["label"]]
        pictures = _Pictures(arrays["data"], arrays["offsets"], path.name)
        if len(pictures) != len(labels):
            raise ArtifactError(f"{path.name}: {len(labels)} labels for {len(pictures)} images")
        scores = arrays.get("score")
        if scores is not None and scores.shape != (len(labels),):
            raise ArtifactError(f"{path.name}: {len(scores)} scores for {len(labels)} images")
        return cls(labels, pictures, None if scores is None else [float(v) for v in scores])


