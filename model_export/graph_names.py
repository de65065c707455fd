"""Layer names and blocks from what the exporter wrote about each node.

Where it comes from, best first:

- the dynamo exporter (`torch.onnx.export(..., dynamo=True)`) stores the module path of
  every node in its metadata: `pkg.torch.onnx.name_scopes` = ['', 'features',
  'features.1', ..., '<fx node name>'];
- the TorchScript exporter (`dynamo=False`) names nodes `/features/features.1/block/
  block.0/block.0.2/Relu`: each scope is a module's name relative to its parent, with the
  parent's name as a prefix when the parent is a container, so the path is rebuilt by
  joining them (`features.1.block.0.2`);
- a Conv or Gemm whose weight initializer is named `<path>.weight` (both torch
  exporters keep parameter names) is named after that module, so a conv reads the same
  whichever torch exporter wrote it (and a Conv with its BatchNorm folded in keeps the
  conv's name, not the BatchNorm's scope); unless several nodes read that weight (the
  dynamo exporter gives equal weights one initializer): then their scopes name them;
- any other exporter's node name (tf2onnx `model/conv1/Relu`), else its output's name,
  sanitised to [A-Za-z0-9._-].

A layer's `group` is its block: the module whose forward merges paths (a residual Add or a
Concat), e.g. `layer2.1` or `features.3`; a layer outside every such block belongs to the
module beside them at the same level (`features.0`, `conv1`, `classifier`).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from .onnx_graph import sanitise

NAME_SCOPES = "pkg.torch.onnx.name_scopes"
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_TORCHSCRIPT = re.compile(r"^/(?:[^/]+/)*[A-Za-z]+(?:_\d+)?$")


def module_path(node: Any, constants: Iterable[str], op: str | None = None, shared: Collection[str] = ()) -> str | None:
    """The torch module path that made ``node``, or None where the file does not say; a
    torch op outside every module (a functional relu in forward) is named by its op (``op``:
    the activation a few ops spell out, where they do). ``shared``: weights that several
    nodes read, whose names name none of them."""
    if node.op_type in WEIGHTED and len(node.input) > 1:
        weight = str(node.input[1])
        if weight in constants and weight not in shared and weight.endswith(".weight") and not weight.startswith("onnx::"):
            return weight[: -len(".weight")]
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            return _from_name_scopes(prop.value) or (op or str(node.op_type))
    if node.name and _TORCHSCRIPT.match(node.name):
        return _from_torchscript(node.name) or (op or str(node.op_type))
    return None


def shared_weights(nodes: Iterable[Any]) -> set[str]:
    """The weights more than one Conv / Gemm / MatMul reads: the dynamo exporter gives
    modules whose weights are equal one initializer (named after the first module)."""
    readers = Counter(str(n.input[1]) for n in nodes if n.op_type in WEIGHTED and len(n.input) > 1)
    return {weight for weight, count in readers.items() if count > 1}


def _from_name_scopes(text: str) -> str | None:
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    # The last entry is the fx node's own name (`relu_2`); the one before is its module.
    if not isinstance(scopes, list) or len(scopes) < 2:
        return None
    path = scopes[-2]
    return path if isinstance(path, str) and path else None


def _from_torchscript(name: str) -> str | None:
    parts = [p for p in name.split("/") if p][:-1]  # the last part is the op
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part  # `block.0` inside `block`: the container's name is its prefix
        else:
            path.append(part)
    return ".".join(path) or None


def fallback_name(node: Any, value: str) -> str:
    """Another exporter's name for the value, sanitised: the node's name, else the value's."""
    for text in (node.name, value):
        name = sanitise(text or "")
        if name and not name.isdigit():
            return name
    return str(node.op_type).lower()


def groups(paths: dict[str, str | None], merge_paths: set[str]) -> dict[str, str | None]:
    """Each layer's block, from the module paths of every layer (``paths``) and of the
    nodes that merge paths (``merge_paths``); None for all when nothing merges (a chain)."""
    blocks = {tuple(p.split(".")) for p in merge_paths if p}
    if not blocks:
        return dict.fromkeys(paths)
    ancestors = {b[:i] for b in blocks for i in range(len(b))}
    out: dict[str, str | None] = {}
    for layer, path in paths.items():
        if not path:
            out[layer] = None
            continue
        parts = tuple(path.split("."))
        prefix = next(parts[:i] for i in range(len(parts), -1, -1) if parts[:i] in blocks or parts[:i] in ancestors)
        if prefix in blocks:
            out[layer] = ".".join(prefix)
        else:
            out[layer] = ".".join(parts[: len(prefix) + 1])
    return out
