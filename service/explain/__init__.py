"""Explanations: which part of the image made the network decide, and how far to trust it.

The engine runs on numpy alone and never runs a model: the data plane gives it forward
passes. How it plugs in:

At load, once per model version (``proto``: the artifact's ONNX graph; ``shared``: the
runtime's numpy weights, which the heads then use in place; the service does this in
``models.runtime.load_model`` and ``models.loader.Loader``)::

    explainer = Explainer(describe(name, artifact.metadata, proto, shared=runtime.shared_weights),
                          max_passes=options.max_passes, batch_size=...)   # ExplainOptions

Per request, before decoding the image (errors are 4xx ServiceErrors naming valid values)::

    plan = explainer.plan(ExplainRequest(method=..., target=..., layer=..., passes=...,
                                         faithfulness=...))

then, with the preprocessed image ``tensor`` [1, C, H, W] float32::

    async def forward(batch: np.ndarray, outputs: tuple[str, ...]) -> list[np.ndarray]:
        result = await batcher.infer(batch, outputs, Priority.EXPLAIN)
        return result.outputs

    explanation = await explainer.run(plan, tensor, forward)   # cancel it when the client goes

``explainer.model.catalogue()`` lists the methods valid at each layer (for the layer list),
and ``service.codecs.arrays.encode_saliency`` renders ``explanation.map`` (json, npy, or a png
overlay on ``encoding.input_image(tensor[0], mean, std, scale)``).

Methods and their costs (forward passes, besides the one on the image):

- ``occlusion`` (default): a window of 1/7 of the image at half-window stride, 169
  positions, filled with the baseline image. The most faithful map at a moderate cost:
  see ``engine.default_method``.
- ``rise``: 1000 random 7 x 7 masks (p = 0.5, seeded), one pass each.
- ``score-cam``: one pass per channel of the layer (capped by mean activation).
- ``grad-cam``: classic Grad-CAM (channel weights = the gradient averaged over positions);
  no extra pass; exact gradients by replaying the head in numpy, where the layers after the
  tapped one allow it (``head.HeadAnalysis``; the ops and their gradients in ``ops.py``).
- ``hires-cam``: the same exact gradient, weighing each position (gradient x activation).
- ``eigen-cam``: no extra pass; not class-specific.

Faithfulness (``faithfulness.py``) adds 58 passes. A map with one value everywhere (an
empty map: no evidence found) never "beats random", and ``Explanation.note`` says so.
"""

from service.explain.engine import (
    Cost,
    Explainer,
    ExplainOptions,
    ExplainPlan,
    ExplainRequest,
    Explanation,
    Target,
    method_cost,
)
from service.explain.faithfulness import Faithfulness
from service.explain.model import (
    METHODS,
    Catalogue,
    ExplainableModel,
    LayerInfo,
    LayerMethods,
    Method,
    NotRecommended,
    default_method,
    default_reason,
    describe,
)
from service.explain.passes import Forward

__all__ = [
    "METHODS",
    "Catalogue",
    "Cost",
    "ExplainPlan",
    "ExplainRequest",
    "ExplainableModel",
    "ExplainOptions",
    "Explainer",
    "Explanation",
    "Faithfulness",
    "Forward",
    "LayerInfo",
    "LayerMethods",
    "Method",
    "NotRecommended",
    "Target",
    "default_method",
    "default_reason",
    "describe",
    "method_cost",
]
