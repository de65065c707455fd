"""Which layers an int8 version keeps in float32 when int8 costs its top-1 class too often.

A tapped layer's error against the float version (model_export/quantize.py measures it on
the evaluation images) is mostly inherited: each layer passes on the noise its input
carried and adds its own. So the layers to keep float are not those with the lowest SQNR
(the deepest ones, nearly always) but those that add the most noise: the relative noise
power of a layer's output, ``relative_error**2``, minus the worst of the layers it reads
(its nearest tapped ancestors in the graph; none for the first ones). On the learned zoo
those are the depthwise convs and squeeze-excite gates of MobileNet, ShuffleNet and
EfficientNet, the convs after a wide-range activation.

A kept layer is the graph nodes between its tapped ancestors and its own output (its conv,
or its ReLU, its Add, ...): onnxruntime's quantizer leaves them float (``nodes_to_exclude``).
The class output counts as a layer too: its nodes are the classifier after the last tapped
layer (AlexNet's three dense layers, where int8 gains the most speed: the record's timings
say what keeping them cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from artifact import LayerError

# Keep at most this share of the tapped layers float: past it the version is more float
# than int8, and its speed and size with it.
MAX_FLOAT_SHARE = 0.25


@dataclass(frozen=True)
class LayerNodes:
    """A tapped layer: the nodes that make it from the tapped layers it reads."""

    name: str
    nodes: tuple[str, ...]  # node names in the float graph
    ancestors: tuple[str, ...]  # the nearest tapped layers upstream


def layer_nodes(model_path: Path, layers: Sequence[str]) -> dict[str, LayerNodes]:
    """Each tapped layer's own nodes and nearest tapped ancestors, from the float graph."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    tapped = set(layers)
    found = {}
    for name in layers:
        nodes: list[str] = []
        ancestors: set[str] = set()
        seen: set[int] = set()
        stack = [name]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if node is None or id(node) in seen:
                continue  # the graph's input or an initializer, or walked already
            seen.add(id(node))
            if node.name:
                nodes.append(node.name)
            for value in node.input:
                if value in tapped and value != name:
                    ancestors.add(value)
                elif value:
                    stack.append(value)
        found[name] = LayerNodes(name, tuple(nodes), tuple(sorted(ancestors)))
    return found


def added_noise(errors: Iterable[LayerError], graph: dict[str, LayerNodes]) -> dict[str, float]:
    """Per tapped layer: the relative noise power it adds to the worst of its inputs'."""
    noise = {row.name: row.relative_error ** 2 for row in errors}
    added = {}
    for name, layer in graph.items():
        if name not in noise:
            continue
        inherited = max((noise[a] for a in layer.ancestors if a in noise), default=0.0)
        added[name] = noise[name] - inherited
    return added


def most_hurt(errors: Sequence[LayerError], graph: dict[str, LayerNodes], count: int,
              kept: Sequence[str] = ()) -> list[str]:
    """``kept`` and the layers adding the most noise besides them, ``count`` in all
    (layers with no node of a name the quantizer can exclude are skipped)."""
    added = added_noise(errors, graph)
    chosen = list(kept)
    for name in sorted(added, key=lambda n: added[n], reverse=True):
        if len(chosen) >= count:
            break
        if name not in chosen and graph[name].nodes and added[name] > 0:
            chosen.append(name)
    return chosen


def excluded_nodes(graph: dict[str, LayerNodes], kept: Sequence[str]) -> list[str]:
    return sorted({node for name in kept for node in graph[name].nodes})


def float_layer_steps(layers: int, most: int) -> list[int]:
    """How many layers each further attempt keeps float: 2, 4, 8, ... up to ``most`` and a
    quarter of the tapped layers, whichever is fewer; empty when that is none."""
    limit = min(most, int(layers * MAX_FLOAT_SHARE))
    steps, count = [], 2
    while count < limit:
        steps.append(count)
        count *= 2
    if limit >= 1:
        steps.append(limit)
    return steps
