"""PyTorch -> ONNX: one file, dynamic batch, `logits` plus one output per tapped layer.

Uses the dynamo exporter (torch.onnx.export(dynamo=True), torch 2.14's default): the
taps are forward hooks that run while torch.export traces, so the graph gets each
tapped module's output as a named graph output with no change to the net's code.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from artifact.onnx_file import write_model

from .errors import ExportError

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_PREFIX = "net."  # attribute name of the wrapped net in TapModel


class TapModel(nn.Module):
    """Returns (logits, *tapped outputs). Hooks are registered per call and removed
    after it, so no tensor is ever stored on the module (torch.export rejects that)."""

    def __init__(self, net: nn.Module, taps: list[str]) -> None:
        super().__init__()
        self.net = net
        self.taps = list(taps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: dict[str, torch.Tensor] = {}
        modules = dict(self.net.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda _m, _args, out, name=name: seen.__setitem__(name, out))
            for name in self.taps
        ]
        try:
            logits = self.net(x)
        finally:
            for handle in handles:
                handle.remove()
        return (logits, *(seen[name] for name in self.taps))


def export_onnx(
    net: nn.Module, taps: list[str], input_shape: tuple[int, int, int], path: str | os.PathLike[str]
) -> int:
    """Write the tapped net to `path`; returns the opset used."""
    wrapper = TapModel(net, taps).eval()
    # Batch 2, not 1: torch.export specialises size-1 dimensions to constants.
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    try:
        # The exporter reports progress with print(); keep the CLI output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME, *taps],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX export failed: {first}") from exc
    _tidy(path, taps)
    return OPSET


def _tidy(path: str | os.PathLike[str], taps: list[str]) -> None:
    """Drop the wrapper's `net.` prefix from initializer names (so they read
    `features.0.weight`, as in PyTorch) and check the outputs came out as asked."""
    model = onnx.load(str(path))
    graph = model.graph
    names = {init.name for init in graph.initializer}
    rename = {}
    for name in names:
        if name.startswith(_PREFIX) and name[len(_PREFIX) :] not in names:
            rename[name] = name[len(_PREFIX) :]
    for init in graph.initializer:
        init.name = rename.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    outputs = [o.name for o in graph.output]
    if outputs != [OUTPUT_NAME, *taps]:
        raise ExportError(f"exported graph outputs {outputs} differ from the requested ones")
    if [i.name for i in graph.input] != [INPUT_NAME]:
        raise ExportError(f"exported graph inputs {[i.name for i in graph.input]} are not [{INPUT_NAME!r}]")
    write_model(model, Path(path))


def conv_weight_names(path: str | os.PathLike[str], convs: dict[str, nn.Conv2d]) -> dict[str, str | None]:
    """The ONNX initializer holding each conv's kernel, found in the graph itself.

    Matched by name first (the exporter keeps module paths), then by value; BN folding
    by the exporter's optimiser keeps the conv's name but changes the values, which
    is why the name comes first.
    """
    model = onnx.load(str(path))
    inits = {init.name: init for init in model.graph.initializer}
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    found: dict[str, str | None] = {}
    for conv_path, module in convs.items():
        wanted = f"{conv_path}.weight"
        by_name = [w for w in conv_weights if w == wanted or w.endswith("." + wanted)]
        if by_name:
            found[conv_path] = by_name[0]
            continue
        kernel = module.weight.detach().cpu().numpy()
        by_value = [
            w
            for w in conv_weights
            if tuple(inits[w].dims) == kernel.shape
            and np.array_equal(numpy_helper.to_array(inits[w]), kernel)
        ]
        found[conv_path] = by_value[0] if len(by_value) == 1 else None
    return found
