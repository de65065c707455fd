"""The explanation methods. Each takes the explained image's ``Context`` and returns a raw map
at the model's input resolution (signed or not; the engine turns it into 0..1 evidence)
and the parameters it used, so an answer says exactly what was computed.

Perturbation methods (occlusion, RISE, Score-CAM) replace pixels with the model's baseline
image and score each perturbed image by the target's probability, read from the class
output by its kind (the softmax of logits; a Softmax graph's own output, never softmaxed
twice; a multi-label model's own score for the class); every such image is one forward
pass, taken from the context's ``Passes``.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import ModelFailed
from service.explain.maps import blend, upsample
from service.explain.model import ExplainableModel, LayerInfo, Method
from service.explain.passes import Passes

# Occlusion (Zeiler & Fergus 2014): a square of the baseline slid over the image at half its
# side. Its side is the stride of the model's deepest spatial layer (the grid on which the
# net's last map says where: 32 px for AlexNet or a ResNet at 224, 4 px for TinyVGG at 28),
# kept within 1/8..1/4 of the image (a 64 px input whose last map is 2 x 2 gets 16 px, not
# half the image); 1/7 of the side where no stride is known.
OCCLUSION_FRACTION = 1 / 7
OCCLUSION_SMALLEST = 1 / 8
OCCLUSION_LARGEST = 1 / 4
OCCLUSION_MIN_GRID = 2
OCCLUSION_GRID = 13  # at most 13 x 13 positions by default: 169 passes, whatever the image
# Score-CAM scores at most this many channels by default (those that fire most): one pass
# each, and a 1280-channel layer took 1339 passes, 27 s (issue 21). More with `passes`.
SCORE_CAM_CHANNELS = 128
# RISE (Petsiuk et al. 2018): 7 x 7 cells, each kept with probability 0.5, upsampled
# bilinearly with a random sub-cell shift; 1000 masks by default.
RISE_CELLS = 7
RISE_KEEP = 0.5
RISE_MASKS = 1000
RISE_MIN_MASKS = 16


@dataclass
class Context:
    """One image being explained: what the first forward pass told, and the passes left."""

    model: ExplainableModel
    image: np.ndarray  # [C, H, W], the preprocessed input
    target: int
    probability: float  # P(target | image), as service.models.scores.probabilities reads the class output
    outputs: np.ndarray  # [classes]: the class output's values for the image
    passes: Passes
    method_passes: int  # how many passes the method itself may make
    seed: int
    layer: LayerInfo | None = None
    activations: np.ndarray | None = None  # the layer's output for the image, [1, C, h, w]
    _baseline_probability: float | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[2])

    @property
    def baseline(self) -> np.ndarray:
        return self.model.baseline

    async def baseline_probability(self) -> float:
        """P(target | baseline image): one pass, where the faithfulness curves end."""
        if self._baseline_probability is None:
            image = np.broadcast_to(self.baseline, self.image.shape).astype(np.float32)[None]
            (probability,) = await self.passes.probabilities(1, lambda a, b: image, self.target)
            self._baseline_probability = float(probability)
        return self._baseline_probability


MethodResult = tuple[np.ndarray, dict[str, Any]]
MethodFn = Callable[[Context], Awaitable[MethodResult]]


def cam_to_input(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A class activation map at the layer's resolution -> the input's: ReLU at the layer
    (as Grad-CAM defines it), then bilinear upsampling with aligned pixel centres."""
    return upsample(np.maximum(cam, 0.0), size)


# ---- occlusion -------------------------------------------------------------------------

def occlusion_window(model: ExplainableModel) -> tuple[int, int]:
    """The occluder's side, rows and columns (see OCCLUSION_FRACTION above)."""
    size = model.input_shape[1:]
    strides = [layer.stride for layer in model.layers if layer.spatial and layer.stride]
    window = []
    for side in size:
        if strides:
            lo, hi = math.ceil(side * OCCLUSION_SMALLEST), max(1, side // round(1 / OCCLUSION_LARGEST))
            window.append(int(min(max(strides[-1], lo), max(hi, lo))))
        else:
            window.append(max(1, round(side * OCCLUSION_FRACTION)))
    return window[0], window[1]


@dataclass(frozen=True)
class OcclusionGrid:
    """Where the occluder goes: its side and its starts along each axis."""

    window: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @property
    def positions(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def stride(self) -> list[int]:
        return [int(np.diff(s).max()) if len(s) > 1 else 0 for s in (self.rows, self.cols)]

    @classmethod
    def default(cls, size: tuple[int, int], window: tuple[int, int]) -> OcclusionGrid:
        """Half-window stride, the last window flush with the far edge; at most OCCLUSION_GRID
        windows per axis (the stride then grows a little past half a window)."""
        windows, starts = [], []
        for side, w in zip(size, window, strict=True):
            step = max(1, w // 2)
            half = np.unique(np.append(np.arange(0, side - w + 1, step), side - w))
            if len(half) > OCCLUSION_GRID:
                while True:
                    half = np.unique(np.round(np.linspace(0, side - w, OCCLUSION_GRID)).astype(np.int64))
                    gap = int(np.diff(half).max())
                    if gap <= w:
                        break
                    w = gap  # never a gap between windows: widen them, place them again
            windows.append(w)
            starts.append(half)
        return cls((windows[0], windows[1]), starts[0], starts[1])

    @classmethod
    def within(cls, size: tuple[int, int], window: tuple[int, int], passes: int) -> OcclusionGrid:
        """The grid for at most ``passes`` positions: the default one, coarser for fewer (never
        below 2 x 2; the window widens so the windows still cover the image), finer for more
        (down to a 1 px stride)."""
        default = cls.default(size, window)
        if passes == default.positions:
            return default
        scale = math.sqrt(max(passes, 0) / default.positions)
        windows, starts = [], []
        for side, w, base in zip(size, window, (len(default.rows), len(default.cols)), strict=True):
            n = max(OCCLUSION_MIN_GRID, min(side - w + 1, math.floor(base * scale + 1e-9)))
            if n > 1 and (side - w) / (n - 1) > w:  # a stride wider than the window leaves gaps
                w = math.ceil(side / n)
            n = max(1, min(n, side - w + 1))
            windows.append(w)
            starts.append(np.unique(np.round(np.linspace(0, side - w, n)).astype(np.int64)))
        return cls((windows[0], windows[1]), starts[0], starts[1])


def _tent(width: int) -> np.ndarray:
    """Weights across a window, highest at its centre and never 0 inside it: windows half a
    window apart then blend linearly from one centre to the next instead of in steps."""
    i = np.arange(width)
    weights: np.ndarray = np.minimum(i + 1, width - i).astype(np.float64)
    return weights


async def occlusion(ctx: Context) -> MethodResult:
    grid = OcclusionGrid.within(ctx.size, occlusion_window(ctx.model), ctx.method_passes)
    wh, ww = grid.window
    positions = [(r, c) for r in grid.rows for c in grid.cols]
    image, baseline = ctx.image, ctx.baseline

    def make(start: int, stop: int) -> np.ndarray:
        batch = np.repeat(image[None], stop - start, axis=0)
        for i, (r, c) in enumerate(positions[start:stop]):
            batch[i, :, r : r + wh, c : c + ww] = baseline
        return batch

    scores = await ctx.passes.probabilities(len(positions), make, ctx.target)
    # Each pixel: the drop in P(target) of the windows that covered it, weighted by how near
    # their centres it lies (a tent), so the map has no steps at the window edges.
    tent = np.outer(_tent(wh), _tent(ww))
    drop = np.zeros(ctx.size, dtype=np.float64)
    weight = np.zeros(ctx.size, dtype=np.float64)
    for (r, c), score in zip(positions, scores, strict=True):
        drop[r : r + wh, c : c + ww] += tent * (ctx.probability - score)
        weight[r : r + wh, c : c + ww] += tent
    raw = np.divide(drop, weight, out=np.zeros_like(drop), where=weight > 0)
    return raw, {"window": [wh, ww], "stride": grid.stride, "positions": grid.positions}


# ---- RISE ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RiseMasks:
    """N random masks, reproducible from the seed, built a slice at a time."""

    grids: np.ndarray  # [N, s, s] 0/1
    shifts: np.ndarray  # [N, 2] sub-cell shift (rows, cols)
    rows: np.ndarray  # [(s+1) * cell_h, s] bilinear weights
    cols: np.ndarray  # [(s+1) * cell_w, s]
    size: tuple[int, int]

    @classmethod
    def make(cls, count: int, size: tuple[int, int], seed: int, cells: int = RISE_CELLS,
             keep: float = RISE_KEEP) -> RiseMasks:
        from service.explain.maps import resize_matrix

        rng = np.random.default_rng(seed)
        cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
        grids = (rng.random((count, cells, cells)) < keep).astype(np.float32)
        shifts = np.stack([rng.integers(0, cell[0], count), rng.integers(0, cell[1], count)], axis=1)
        return cls(grids, shifts, resize_matrix(cells, (cells + 1) * cell[0]),
                   resize_matrix(cells, (cells + 1) * cell[1]), size)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Masks start..stop as [n, H, W] in 0..1: each grid upsampled, then cropped at its shift."""
        h, w = self.size
        dy = self.shifts[start:stop, 0][:, None] + np.arange(h)[None]
        dx = self.shifts[start:stop, 1][:, None] + np.arange(w)[None]
        masks: np.ndarray = np.einsum("nHs,nst,nWt->nHW", self.rows[dy], self.grids[start:stop], self.cols[dx],
                                      optimize=True)
        return masks


async def rise(ctx: Context) -> MethodResult:
    count = ctx.method_passes
    masks = RiseMasks.make(count, ctx.size, ctx.seed)
    image, baseline = ctx.image, ctx.baseline
    weighted = np.zeros(ctx.size, dtype=np.float64)
    kept = np.zeros(ctx.size, dtype=np.float64)
    all_scores = []
    # Masks are scored a batch at a time, so a thousand 224 px masks never sit in memory.
    step = ctx.passes.batch_size
    for start in range(0, count, step):
        stop = min(count, start + step)
        chunk = await ctx.passes.offload(functools.partial(masks.slice, start, stop), stop - start)

        def make(a: int, b: int, chunk: np.ndarray = chunk) -> np.ndarray:
            return blend(image, baseline, chunk[a:b])

        scores = await ctx.passes.probabilities(stop - start, make, ctx.target)
        weighted += np.einsum("n,nhw->hw", scores, chunk)
        kept += chunk.sum(axis=0)
        all_scores.append(scores)
    mean_score = float(np.concatenate(all_scores).mean())
    # E[P | pixel kept] - E[P]: zero in expectation for a pixel the target ignores, so
    # "higher = more evidence" holds without a min-max stretch of the noise floor.
    raw = np.divide(weighted, kept, out=np.full_like(weighted, mean_score), where=kept > 0) - mean_score
    return raw, {"masks": count, "cells": RISE_CELLS, "keep_probability": RISE_KEEP, "seed": ctx.seed}


# ---- CAM family ------------------------------------------------------------------------

def _activations(ctx: Context) -> np.ndarray:
    assert ctx.activations is not None and ctx.layer is not None
    acts: np.ndarray = ctx.activations[0].astype(np.float32, copy=False)
    return acts


async def score_cam(ctx: Context) -> MethodResult:
    """Score-CAM (Wang et al. 2020): each channel, upsampled and scaled to 0..1, keeps the
    input where it fires (the rest becomes the baseline image); the target's probability
    for that image weighs the channel, as the authors' implementation does:
    sum_k P(target | image kept by channel k) * A_k, never negative.

    Not the increase over the baseline image (the paper's CIC, P_k - P(target | baseline)):
    that subtracts P(target | baseline) * sum_k A_k everywhere, and on a net that needs the
    whole object, where one part alone looks more like another class than the blank image
    does (a pagoda's roof alone is a "roof" to a 1000-class net), every weight is negative
    and the ReLU leaves an empty map on an image the model names with confidence (issue 21;
    tests/support/explain_models.py ``build_parts``). Measured on the zoo, the two rank the
    same maps alike where the CIC is positive (benchmarks/RESULTS-explain.md).

    More channels than passes (by default at most SCORE_CAM_CHANNELS): those that fire
    most (mean activation); a weak channel's mask keeps little of the image and weighs
    little in the sum anyway."""
    acts = _activations(ctx)
    flat = acts.reshape(acts.shape[0], -1)
    informative = np.flatnonzero(flat.max(axis=1) > flat.min(axis=1))  # a flat channel masks nothing
    order = informative[np.argsort(-flat[informative].mean(axis=1), kind="stable")]
    chosen = np.sort(order[: ctx.method_passes])
    image, baseline, size = ctx.image, ctx.baseline, ctx.size

    def make(start: int, stop: int) -> np.ndarray:
        # Upsampled a batch at a time: AlexNet's 256 channels at 224 px would be 51 MB at once.
        up = upsample(acts[chosen[start:stop]], size)
        flat_up = up.reshape(len(up), -1)
        lo, hi = flat_up.min(axis=1), flat_up.max(axis=1)
        masks = (up - lo[:, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None]
        return blend(image, baseline, masks)

    scores = await ctx.passes.probabilities(len(chosen), make, ctx.target)
    # Scaled by the largest: only their ratios matter (the map is scaled to 0..1), and a
    # 1000-class model's probabilities of 1e-30 stay representable in float32.
    peak = float(scores.max()) if len(chosen) else 0.0
    weights = (scores / peak if peak > 0 else scores).astype(np.float32)
    cam = np.tensordot(weights, acts[chosen], axes=1) if len(chosen) else acts[0] * 0
    return cam_to_input(cam, ctx.size), {"channels_scored": int(len(chosen)), "channels": int(acts.shape[0]),
                                         "weights": "P(target | the image kept where the channel fires)"}


def grad_cam_map(acts: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) at the layer's resolution ([C, h, w] each): channel
    k weighed by its gradient averaged over positions, sum_k mean(dy/dA_k) * A_k.

    Where the head treats every position alike (global average pooling: ResNet-18) the
    gradient is the same at every position and this is each position's share of the
    logit. A head that flattens the map into a dense layer (TinyVGG, LeNet, AlexNet)
    weighs each position separately and the average can cancel out: on the trained
    digits TinyVGG most averaged weights are negative and the map is empty (measured in
    docs/explain.md). ``hires_cam_map`` keeps the per-position weights.
    """
    weights = gradient.reshape(gradient.shape[0], -1).mean(axis=1)
    cam: np.ndarray = np.tensordot(weights, acts, axes=1)
    return cam


def hires_cam_map(acts: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020): each position weighed by its own gradient,
    sum_k dy/dA_k[i, j] * A_k[i, j]. The same map as Grad-CAM where the gradient does not
    vary over positions; for a dense head, each position's exact share of the logit."""
    cam: np.ndarray = np.einsum("khw,khw->hw", gradient, acts)
    return cam


# How far a replayed head's class scores may be from the model's, relative to the largest.
# A float head replays to rounding. An int8 version's head rounds at each QuantizeLinear,
# where onnxruntime's sums and numpy's, a few float32 ulps apart, can land on either side of
# a rounding tie: one step of one unit. On the zoo's MobileNetV3-small in int8 that moved
# the scores by up to 2.6e-3 of the largest (200 held-out images; 34 over 1e-3, which
# answered grad-cam with a 500); a wrongly replayed head misses by the scores' own size.
EXACT_REPLAY = 1e-3
REQUANTIZED_REPLAY = 1e-2


async def _layer_gradient(ctx: Context, method: str) -> tuple[np.ndarray, dict[str, Any]]:
    """d(target score)/d(layer) for the image, [C, h, w], computed exactly by replaying the
    layers after the tapped one in numpy (service/explain/head.py). The score is the
    target's logit: the value before a final Softmax / LogSoftmax / Sigmoid."""
    assert ctx.layer is not None and ctx.activations is not None
    head = ctx.model.grad_head(ctx.layer.name)
    assert head is not None, f"plan() only allows {method} where the head is exact"
    try:
        outputs, gradient = await asyncio.to_thread(head.gradient, ctx.activations, ctx.target)
    except (ValueError, IndexError, KeyError) as exc:  # a graph the analysis let through but numpy cannot run
        raise ModelFailed(f"{method} could not replay the layers after {ctx.layer.name} ({exc}); "
                          "use another method") from exc
    # The replayed head must give the class output the model gave for this very image; if
    # not, the gradient would be of some other function.
    scale = max(1.0, float(np.abs(ctx.outputs).max()))
    tolerance = REQUANTIZED_REPLAY if "QuantizeLinear" in head.ops else EXACT_REPLAY
    if float(np.abs(outputs[0] - ctx.outputs).max()) > tolerance * scale:
        raise ModelFailed(
            f"{method}'s replay of the layers after {ctx.layer.name} disagrees with the model's output; "
            "use another method"
        )
    grad: np.ndarray = gradient[0]
    return grad, {"head": list(head.ops), "score": head.score}


async def grad_cam(ctx: Context) -> MethodResult:
    """Classic Grad-CAM: channel weights = the exact gradient averaged over positions."""
    gradient, parameters = await _layer_gradient(ctx, Method.GRAD_CAM.value)
    cam = grad_cam_map(_activations(ctx), gradient)
    return cam_to_input(cam, ctx.size), {"weights": "per channel (gradient averaged over positions)", **parameters}


async def hires_cam(ctx: Context) -> MethodResult:
    """HiResCAM: the same exact gradient, multiplied element-wise with the activations."""
    gradient, parameters = await _layer_gradient(ctx, Method.HIRES_CAM.value)
    cam = hires_cam_map(_activations(ctx), gradient)
    return cam_to_input(cam, ctx.size), {"weights": "per position (gradient x activation)", **parameters}


def eigen_cam_map(acts: np.ndarray) -> np.ndarray:
    """Eigen-CAM (Muhammad & Yeasin 2020) at the layer's resolution: the projection of each
    position's channel vector on the first principal component, its sign chosen so the map
    correlates positively with the total activation (an SVD's sign is arbitrary)."""
    channels = acts.shape[0]
    positions = acts.reshape(channels, -1).T.astype(np.float64)  # [h*w, C]
    centred = positions - positions.mean(axis=0)
    if not np.any(centred):
        return np.zeros(acts.shape[1:], dtype=np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    total = positions.sum(axis=1)
    if float(projection @ (total - total.mean())) < 0:
        projection = -projection
    cam: np.ndarray = projection.reshape(acts.shape[1:]).astype(np.float32)
    return cam


async def eigen_cam(ctx: Context) -> MethodResult:
    return cam_to_input(eigen_cam_map(_activations(ctx)), ctx.size), {"class_specific": False}


METHOD_FNS: dict[Method, MethodFn] = {
    Method.OCCLUSION: occlusion,
    Method.RISE: rise,
    Method.SCORE_CAM: score_cam,
    Method.GRAD_CAM: grad_cam,
    Method.HIRES_CAM: hires_cam,
    Method.EIGEN_CAM: eigen_cam,
}
