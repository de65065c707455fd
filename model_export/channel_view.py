"""The channel view: for every tapped layer and channel, the held-out images that excite it most.

One image's feature maps cannot show what a channel detects; the images (and the patch of
each) that drive it hardest across a data set can (OpenAI Microscope, the deep
visualization toolbox). The export stage has the data and the model, so it computes
this once per artifact: held-out images run through the exported model.onnx in
onnxruntime, exactly the graph the service runs, and for each channel the top-k images
by the channel's maximum activation are kept with where that maximum is and which box
of input pixels it sees.

The pixels are stored with it, so the service can show it without the data set:

- every referenced image whole, at the model's input size and colour mode (PNG, exactly
  what the model saw: posting it back reproduces the activation), for small inputs
  (up to SMALL_INPUT_PIXELS) and for layers whose receptive field is a large part of a
  large input;
- only the receptive-field crop, for layers of a large input whose field is small
  (rf <= side / CROP_RATIO): an 11 px patch of a 224 px image is what such a channel
  answers to, and 1/16 of the bytes.

Whole images are stored once however many channels rank them, so the addition is
bounded by `images` whole images plus the crops of the shallow layers of large inputs.
Also `samples.npz`: a few held-out images per class for a user to start from.

The images may be labelled (a training export's held-out split, an ImageFolder) or not (a
flat folder of images): then the model itself captions them, each with its top-1 class
and that class's probability (read by the class output's kind, as the service reads it),
and the samples are a few images per class it predicts.
Format: docs/artifact.md. Torch-free (numpy, Pillow, onnxruntime).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from artifact import CHANNEL_VIEW_FILE, SAMPLES_FILE, ChannelViewRecord, Layer, OutputKind, SamplesRecord
from service.models.scores import probabilities

from .datasets import Split, subset_indices
from .errors import ExportError
from .geometry import Geometry, box
from .preprocessing import InputSpec, preprocess, to_pixels

DEFAULT_TOP_K = 9
# Held-out images ranked when --channel-images is not given. Small inputs: 1000 images
# take seconds (tinyvgg, alexnet-small on Fashion-MNIST); at 224 px each image costs a
# full AlexNet pass per image and its PNG, so fewer.
DEFAULT_IMAGES = 1000
DEFAULT_IMAGES_LARGE = 256
SMALL_INPUT_PIXELS = 64 * 64  # up to 64x64 px every picture is the whole input
CROP_RATIO = 4  # large inputs: a layer's pictures are crops when rf <= min(H, W) / 4
SAMPLES_PER_CLASS = 3
MAX_SAMPLES = 60
BATCH_BYTES = 16 << 20  # input bytes per onnxruntime run
# A flat folder without a channel view: images the model captions to pick samples from.
SAMPLE_CANDIDATES = 256


def large_input(size: tuple[int, int]) -> bool:
    """Above SMALL_INPUT_PIXELS: fewer images by default, and their pictures may be crops."""
    return size[0] * size[1] > SMALL_INPUT_PIXELS


def default_images(size: tuple[int, int]) -> int:
    return DEFAULT_IMAGES_LARGE if large_input(size) else DEFAULT_IMAGES


@dataclass
class _LayerTop:
    """Running top-k of one layer: per channel, the best images so far."""

    name: str
    geometry: Geometry
    spatial: bool
    activation: np.ndarray  # (C, k) float32, descending; -inf where unfilled
    image: np.ndarray  # (C, k) int64 ranked-image number; -1 where unfilled
    flat_position: np.ndarray  # (C, k) int64 index into the flattened map

    @classmethod
    def empty(cls, layer: Layer, channels: int, k: int) -> _LayerTop:
        geometry = Geometry.of_layer(layer)
        return cls(
            layer.name,
            geometry,
            len(layer.output_shape) == 4,
            np.full((channels, k), -np.inf, dtype=np.float32),
            np.full((channels, k), -1, dtype=np.int64),
            np.zeros((channels, k), dtype=np.int64),
        )

    def update(self, maps: np.ndarray, first_image: int) -> None:
        """Merge one batch: (B, C, h, w) maps, or (B, F) for a flat layer."""
        flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
        where = flat.argmax(axis=2)  # first maximum in row-major order
        value = np.take_along_axis(flat, where[:, :, None], axis=2)[:, :, 0]
        images = np.arange(first_image, first_image + len(maps))
        activation = np.concatenate([self.activation, value.T.astype(np.float32)], axis=1)
        image = np.concatenate([self.image, np.broadcast_to(images, value.T.shape)], axis=1)
        position = np.concatenate([self.flat_position, where.T], axis=1)
        # Stable: among equal activations the earlier image keeps its place.
        order = np.argsort(-activation, axis=1, kind="stable")[:, : self.activation.shape[1]]
        self.activation = np.take_along_axis(activation, order, axis=1)
        self.image = np.take_along_axis(image, order, axis=1)
        self.flat_position = np.take_along_axis(position, order, axis=1)


@dataclass
class _Pictures:
    """PNG bytes, deduplicated: whole images by image, crops by (image, box)."""

    size: tuple[int, int]
    pixels: list[np.ndarray]  # model-view pixels of each ranked image, uint8 HxW or HxWx3
    blobs: list[bytes] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)  # (left, top) in the input
    kinds: list[str] = field(default_factory=list)
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)

    def whole(self, image: int) -> int:
        return self._add((image,), self.pixels[image], (0, 0), "whole")

    def crop(self, image: int, rect: tuple[int, int, int, int]) -> int:
        left, top, right, bottom = rect
        return self._add((image, *rect), self.pixels[image][top:bottom, left:right], (left, top), "crop")

    def _add(self, key: tuple[int, ...], pixels: np.ndarray, origin: tuple[int, int], kind: str) -> int:
        if key not in self._index:
            self._index[key] = len(self.blobs)
            self.blobs.append(png(pixels))
            self.origins.append(origin)
            self.kinds.append(kind)
        return self._index[key]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def model_view(images: Sequence[np.ndarray] | np.ndarray, spec: InputSpec) -> list[np.ndarray]:
    """Images as the model sees them before scaling: its size and mode, uint8. The
    preprocessing of these pixels equals that of the originals (resizing an image to the
    size it has is the identity), so a stored picture posted back gives the same input."""
    views = []
    for image in images:
        pixels = to_pixels(image, spec.channels, spec.size).astype(np.uint8)
        views.append(pixels[:, :, 0] if spec.channels == 1 else pixels)
    return views


def _session(model_path: Path, size: tuple[int, int]) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    # Small inputs make ops too short for threads to pay off (as in training); large
    # ones use onnxruntime's default, one thread per core.
    if not large_input(size):
        options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Predictions:
    """How the model captions images that have no labels (a flat folder): its class
    output, what that output holds, and its labels."""

    output: str
    kind: OutputKind
    labels: list[str]


@dataclass(frozen=True)
class Captioned:
    """Images with a class each: the folder's (labels), or the model's top-1 (predictions)."""

    images: Split  # labels: class indices into `classes`
    index: np.ndarray  # (N,) each image's index in the folder or held-out split
    classes: list[str]
    scores: np.ndarray | None  # (N,) the model's probability of its top-1; None for labels

    @property
    def kind(self) -> str:
        return "labels" if self.scores is None else "predictions"


def _batch(spec: InputSpec) -> int:
    return max(1, min(256, BATCH_BYTES // (spec.channels * spec.size[0] * spec.size[1] * 4)))


def predict(model_path: Path, images: Split, spec: InputSpec, predictions: Predictions,
            progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 class index, its probability) of every image, by the model itself."""
    from tqdm import tqdm

    session = _session(model_path, spec.size)
    input_name = session.get_inputs()[0].name
    pixels = model_view(images.images, spec)
    top = np.zeros(len(pixels), dtype=np.int64)
    score = np.zeros(len(pixels), dtype=np.float32)
    step = _batch(spec)
    with tqdm(total=len(pixels), desc="captions", unit="img", disable=not progress, file=sys.stderr,
              dynamic_ncols=True, mininterval=0.5) as bar:
        for start in range(0, len(pixels), step):
            chunk = preprocess(pixels[start : start + step], spec)
            (values,) = session.run([predictions.output], {input_name: chunk})
            probs = probabilities(values, predictions.kind)
            top[start : start + len(chunk)] = probs.argmax(axis=1)
            score[start : start + len(chunk)] = probs.max(axis=1)
            bar.update(len(chunk))
    return top, score


def _rank(
    model_path: Path,
    layers: list[Layer],
    pixels: list[np.ndarray],
    spec: InputSpec,
    top_k: int,
    progress: bool,
) -> list[_LayerTop]:
    """Every ranked image through the model once; the running top-k of every channel."""
    from tqdm import tqdm

    session = _session(model_path, spec.size)
    input_name = session.get_inputs()[0].name
    names = [layer.name for layer in layers]
    tops = [_LayerTop.empty(layer, layer.output_shape[1], top_k) for layer in layers]
    batch = _batch(spec)
    with tqdm(
        total=len(pixels),
        desc="channel view",
        unit="img",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    ) as bar:
        for start in range(0, len(pixels), batch):
            chunk = preprocess(pixels[start : start + batch], spec)
            for top, maps in zip(tops, session.run(names, {input_name: chunk}), strict=True):
                top.update(maps, start)
            bar.update(len(chunk))
    return tops


def _crops(top: _LayerTop, size: tuple[int, int]) -> bool:
    """Whether this layer's pictures are receptive-field crops rather than whole images."""
    axes = top.geometry.axes if top.spatial else None
    return large_input(size) and axes is not None and max(a.receptive_field for a in axes) * CROP_RATIO <= min(size)


def _layer_arrays(top: _LayerTop, map_shape: list[int], pictures: _Pictures) -> dict[str, np.ndarray]:
    """The stored table of one layer: activation, image, position, box, picture."""
    channels, k = top.activation.shape
    width = int(map_shape[3]) if top.spatial else 1
    position = np.full((channels, k, 2), -1, dtype=np.int32)
    boxes = np.full((channels, k, 4), -1, dtype=np.int32)
    picture = np.zeros((channels, k), dtype=np.int32)
    crops = _crops(top, pictures.size)
    for c in range(channels):
        for r in range(k):
            image = int(top.image[c, r])
            where = divmod(int(top.flat_position[c, r]), width) if top.spatial else None
            rect = box(top.geometry, where, pictures.size)
            if where is not None:
                position[c, r] = where
            if rect is not None:
                boxes[c, r] = rect
            picture[c, r] = pictures.crop(image, rect) if crops and rect is not None else pictures.whole(image)
    images = top.image.astype(np.int32)
    return {"activation": top.activation, "image": images, "position": position, "box": boxes, "picture": picture}


@dataclass
class ViewOptions:
    images: int | None = None  # held-out images to rank; None: default_images(size); 0: none
    top_k: int = DEFAULT_TOP_K
    progress: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Stored:
    """What was written: metadata `channel_view` and `samples` (None: not stored)."""

    channel_view: ChannelViewRecord | None = None
    samples: SamplesRecord | None = None


def write_views(
    directory: Path,
    model_path: Path,
    layers: list[Layer],
    spec: InputSpec,
    held_out: Split,
    classes: list[str],
    options: ViewOptions,
    predictions: Predictions | None = None,
) -> Stored:
    """channel_view.npz and samples.npz from held-out images, next to model.onnx.

    ``predictions``: the images have no labels (a flat folder, ``classes`` empty); the model
    captions the ones it ranks (or, without a channel view, up to SAMPLE_CANDIDATES of them)
    with its top-1 class and probability."""
    count = default_images(spec.size) if options.images is None else options.images
    if len(held_out) == 0:
        return Stored()
    indices = subset_indices(len(held_out), count, options.seed) if count > 0 else None
    if predictions is None:
        every = Captioned(held_out, np.arange(len(held_out)), classes, None)
    else:
        chosen = indices if indices is not None else subset_indices(len(held_out), SAMPLE_CANDIDATES, options.seed)
        images = held_out.subset(chosen)
        top, score = predict(model_path, images, spec, predictions, options.progress)
        every = Captioned(Split(images.images, top), chosen, list(predictions.labels), score)
        indices = np.arange(len(chosen)) if indices is not None else None  # now into `every`
    view = None
    if indices is not None:
        table = _Table(layers, _subset(every, indices))
        view = _write_channel_view(directory / CHANNEL_VIEW_FILE, model_path, spec, table, options)
    return Stored(view, write_samples(directory, spec, every))


def _subset(captioned: Captioned, indices: np.ndarray) -> Captioned:
    scores = None if captioned.scores is None else captioned.scores[indices]
    return Captioned(captioned.images.subset(indices), captioned.index[indices], captioned.classes, scores)


def check_options(images: int | None, top_k: int) -> None:
    if images is not None and images < 0:
        raise ExportError("--channel-images must be 0 (no channel view) or more")
    if top_k < 1:
        raise ExportError("--channel-top-k must be at least 1")


@dataclass(frozen=True)
class _Table:
    """What is ranked: the tapped layers, over which held-out images."""

    layers: list[Layer]
    ranked: Captioned


def _write_channel_view(
    path: Path, model_path: Path, spec: InputSpec, table: _Table, options: ViewOptions
) -> ChannelViewRecord:
    """Rank, store the tables and pictures at `path`; returns metadata `channel_view`."""
    started = time.perf_counter()
    layers, captioned = table.layers, table.ranked
    ranked = captioned.images
    pixels = model_view(ranked.images, spec)
    top_k = min(options.top_k, len(ranked))
    tops = _rank(model_path, layers, pixels, spec, top_k, options.progress)
    pictures = _Pictures(spec.size, pixels)
    arrays: dict[str, np.ndarray] = {
        "layers": np.array([layer.name for layer in layers]),
        "classes": np.array(captioned.classes),
        "image_index": captioned.index.astype(np.int64),
        "image_label": ranked.labels.astype(np.int64),
        "size": np.array(spec.size, dtype=np.int32),
    }
    if captioned.scores is not None:
        arrays["image_score"] = captioned.scores.astype(np.float32)
    for j, (top, layer) in enumerate(zip(tops, layers, strict=True)):
        for key, value in _layer_arrays(top, layer.output_shape, pictures).items():
            arrays[f"{j}.{key}"] = value
    arrays["picture_data"] = np.frombuffer(b"".join(pictures.blobs), dtype=np.uint8)
    arrays["picture_offsets"] = np.cumsum([0, *[len(b) for b in pictures.blobs]], dtype=np.int64)
    arrays["picture_origin"] = np.array(pictures.origins, dtype=np.int32).reshape(-1, 2)
    arrays["picture_crop"] = np.array([kind == "crop" for kind in pictures.kinds], dtype=bool)
    # PNG data does not deflate again; the tables are small: no compression.
    np.savez(path, allow_pickle=False, **arrays)
    return ChannelViewRecord(
        file=path.name,
        images=len(ranked),
        top_k=top_k,
        layers=[layer.name for layer in layers],
        pictures={kind: pictures.kinds.count(kind) for kind in ("whole", "crop")},
        seconds=round(time.perf_counter() - started, 3),
        captions=captioned.kind,
    )


def write_samples(directory: Path, spec: InputSpec, captioned: Captioned) -> SamplesRecord | None:
    """samples.npz: the first few held-out images of each class, as the model sees them
    (for images the model captioned: of each class it predicts, with its probability)."""
    held_out, classes = captioned.images, captioned.classes
    per_class = max(1, min(SAMPLES_PER_CLASS, MAX_SAMPLES // max(len(classes), 1)))
    chosen: list[int] = []
    for label in range(len(classes)):
        chosen.extend(int(i) for i in np.flatnonzero(held_out.labels == label)[:per_class])
    chosen = chosen[:MAX_SAMPLES]  # class by class, each in held-out order
    if not chosen:
        return None
    blobs = [png(p) for p in model_view([held_out.images[i] for i in chosen], spec)]
    arrays: dict[str, np.ndarray] = {
        "classes": np.array(classes),
        "index": captioned.index[chosen].astype(np.int64),
        "label": held_out.labels[chosen].astype(np.int64),
        "data": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": np.cumsum([0, *[len(b) for b in blobs]], dtype=np.int64),
    }
    if captioned.scores is not None:
        arrays["score"] = captioned.scores[chosen].astype(np.float32)
    np.savez(directory / SAMPLES_FILE, allow_pickle=False, **arrays)
    return SamplesRecord(file=SAMPLES_FILE, count=len(chosen), per_class=per_class, captions=captioned.kind)
