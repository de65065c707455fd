"""How much to trust a map: the deletion and insertion games of Petsiuk et al. (RISE, 2018).

Pixels are ranked by the map, most important first (ties, such as the zeros a ReLU leaves,
in a random order fixed by the seed, never in raster order). In ``STEPS`` equal steps of
1/20 of the pixels each:

- deletion: the ranked pixels are replaced by the model's baseline image (all channels),
  most important first; the score is the area under P(target) from the intact image
  (fraction 0) to the all-baseline image (fraction 1). Lower is better: a faithful map
  removes the evidence first, so the probability falls at once.
- insertion: from the baseline image the ranked pixels are put back, most important first;
  the area under P(target). Higher is better.
- random deletion: deletion in a uniformly random pixel order, on the same image. A map
  whose deletion score is not below this one tells the user nothing.

A map with one value everywhere (all zeros: the method found no evidence for the target)
ranks no pixel above another: its order is the random tie-break alone, so its deletion
score is chance that may fall on either side of the random map's. Such a map never
"beats random": ``beats_random`` is false and ``note`` says why.

The areas use the trapezoid rule over the 21 points, so each lies in 0..1. The endpoints
are shared (the intact image was already scored; the baseline image is one pass), so the
whole measure costs 1 + 3 x 19 = 58 forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.explain.passes import Passes

STEPS = 20
PASSES = 1 + 3 * (STEPS - 1)


@dataclass(frozen=True)
class Faithfulness:
    deletion: float  # area under P(target) as the map's top pixels are removed: lower is better
    insertion: float  # area under P(target) as they are revealed: higher is better
    random_deletion: float  # deletion in a random pixel order, the chance level
    steps: int
    deletion_curve: tuple[float, ...]  # P(target) at 0, 1/steps, ..., 1 of the pixels
    insertion_curve: tuple[float, ...]
    random_deletion_curve: tuple[float, ...]
    uniform: bool = False  # the map has one value everywhere: it ranks nothing

    @property
    def beats_random(self) -> bool:
        """The map's deletion score is below the random map's, and the map ranks pixels at all."""
        return not self.uniform and self.deletion < self.random_deletion

    @property
    def note(self) -> str | None:
        """How to read the scores when the map does not beat chance; None when it does."""
        if self.uniform:
            return "the map is uniform (it ranks no pixel above another): its scores are chance, not evidence"
        if not self.beats_random:
            return ("the map does not beat a random map on this image (deletion not below random_deletion): "
                    "do not trust it here")
        return None


def uniform_map_note(saliency: np.ndarray, method: str) -> str | None:
    """A sentence for a map that says nothing, whatever the faithfulness setting; None otherwise."""
    if not is_uniform(saliency):
        return None
    if not saliency.any():
        # Classic Grad-CAM's usual way to an empty map is averaging away the gradients a
        # dense head gives each position (TinyVGG on digits: 30 of 30): HiResCAM keeps them.
        instead = ("try hires-cam, which keeps each position's gradient where grad-cam averages them, "
                   "or occlusion") if method == "grad-cam" else "try another method"
        return (f"the map is empty: {method} found no evidence for the target in this image "
                f"(no positive importance anywhere); {instead}")
    return f"the map is uniform: {method} ranks no part of the image above another"


def is_uniform(saliency: np.ndarray) -> bool:
    return saliency.size == 0 or float(saliency.max()) == float(saliency.min())


def ranking(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """rank[pixel] = its place in the order, 0 = most important; ties in random order."""
    flat = saliency.reshape(-1)
    order = np.lexsort((rng.random(flat.size), -flat))
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank


def area(curve: np.ndarray) -> float:
    """Trapezoid area under a curve sampled at evenly spaced fractions 0..1."""
    return float(((curve[:-1] + curve[1:]) / 2).mean())


async def measure(image: np.ndarray, baseline: np.ndarray, saliency: np.ndarray, passes: Passes, target: int,
                  probability: float, baseline_probability: float, seed: int) -> Faithfulness:
    """The three curves for ``saliency`` ([H, W]) on ``image`` ([C, H, W])."""
    rng = np.random.default_rng(seed)
    pixels = saliency.size
    ranked = ranking(saliency, rng)
    shuffled = rng.permutation(pixels)  # the random map's ranking
    counts = [round(pixels * k / STEPS) for k in range(1, STEPS)]
    full = np.broadcast_to(baseline, image.shape).astype(np.float32)
    # (ranking, keep the top pixels of the original?) for deletion, insertion, random deletion
    games = [(ranked, False), (ranked, True), (shuffled, False)]
    jobs = [(rank, insert, n) for rank, insert in games for n in counts]
    shape = saliency.shape

    def make(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *image.shape), dtype=np.float32)
        for i, (rank, insert, n) in enumerate(jobs[start:stop]):
            top = (rank < n).reshape(shape)
            out[i] = np.where(top, image, full) if insert else np.where(top, full, image)
        return out

    scores = await passes.probabilities(len(jobs), make, target)
    inner = scores.reshape(3, STEPS - 1)
    deletion = np.concatenate([[probability], inner[0], [baseline_probability]])
    insertion = np.concatenate([[baseline_probability], inner[1], [probability]])
    random = np.concatenate([[probability], inner[2], [baseline_probability]])
    return Faithfulness(
        deletion=area(deletion),
        insertion=area(insertion),
        random_deletion=area(random),
        steps=STEPS,
        deletion_curve=tuple(float(v) for v in deletion),
        insertion_curve=tuple(float(v) for v in insertion),
        random_deletion_curve=tuple(float(v) for v in random),
        uniform=is_uniform(saliency),
    )
