"""What the metadata says about a PyTorch net: taps, parameter counts, receptive fields.

Everything is derived from one traced forward pass (module calls in execution order,
with their input/output shapes), so it follows what the net does rather than how its
modules happen to be declared; receptive fields are then computed analytically along
the main path (geometry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from artifact import Layer, Params

from . import metadata
from .errors import ExportError
from .geometry import INPUT, UNKNOWN, Geometry
from .metadata import ParamCount, ParamGroup

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Mish,
    nn.PReLU,
)
# Modules between a conv and its activation that do not change what a map shows.
PASS_THROUGH = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass
class Call:
    """One module call in a traced forward pass."""

    path: str
    module: nn.Module
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    leaf: bool
    side: bool  # off the main path (e.g. a ResNet shortcut)


def prepare(model: nn.Module) -> nn.Module:
    """Turn off in-place activations: a tapped ReLU(inplace=True) would overwrite the
    conv output that another tap or the hook itself reads."""
    for module in model.modules():
        if hasattr(module, "inplace"):
            # setattr: nn.Module.__getattr__ types attributes as Tensor | Module.
            setattr(module, "inplace", False)  # noqa: B010
    return model


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return None


def trace(model: nn.Module, example: torch.Tensor, side_paths: tuple[str, ...] = ()) -> list[Call]:
    """Module calls of one forward pass in completion order (children before parents)."""
    calls: list[Call] = []
    handles = []
    for path, module in model.named_modules():
        if not path:
            continue

        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, path: str = path) -> None:
            calls.append(
                Call(
                    path,
                    mod,
                    _shape(args[0]) if args else None,
                    _shape(out),
                    leaf=not any(True for _ in mod.children()),
                    side=any(part in side_paths for part in path.split(".")),
                )
            )

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def last_calls(calls: list[Call]) -> dict[str, int]:
    """Index of each path's last call (a reused module's tap shows its last output)."""
    return {call.path: i for i, call in enumerate(calls)}


def default_taps(calls: list[Call]) -> list[str]:
    """Each conv's activation (or the conv itself), each pool, the last spatial layer."""
    main = [c for c in calls if c.leaf and not c.side]
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.path] = counts.get(c.path, 0) + 1
    taps: list[str] = []
    for i, call in enumerate(main):
        if isinstance(call.module, POOLS):
            taps.append(call.path)
        elif isinstance(call.module, nn.Conv2d):
            j = i + 1
            while j < len(main) and isinstance(main[j].module, PASS_THROUGH):
                j += 1
            after = main[j] if j < len(main) else None
            if after is not None and isinstance(after.module, ACTIVATIONS) and counts[after.path] == 1:
                taps.append(after.path)
            else:
                taps.append(call.path)
    spatial = [c for c in main if c.out_shape is not None and len(c.out_shape) == 4]
    if spatial and spatial[-1].path not in taps:
        taps.append(spatial[-1].path)
    order = last_calls(calls)
    return sorted(dict.fromkeys(taps), key=order.__getitem__)


def resolve_taps(calls: list[Call], requested: list[str]) -> list[str]:
    """Validate --layers: module paths that run in forward, returned in graph order."""
    order = last_calls(calls)
    valid = sorted(order, key=order.__getitem__)
    unknown = [p for p in requested if p not in order]
    if unknown:
        raise ExportError(f"unknown layer(s) {', '.join(unknown)}; valid layers: {', '.join(valid)}")
    return sorted(dict.fromkeys(requested), key=order.__getitem__)


def count_params(module: nn.Module, recurse: bool = True) -> int:
    return sum(p.numel() for p in module.parameters(recurse=recurse))


def param_summary(model: nn.Module) -> Params:
    """metadata `params` of a PyTorch net: every module that owns parameters."""
    counts = []
    for path, module in model.named_modules():
        group: ParamGroup = (
            "conv"
            if isinstance(module, nn.modules.conv._ConvNd)
            else "dense"
            if isinstance(module, nn.Linear)
            else "other"
        )
        counts.append(ParamCount(path, type(module).__name__, count_params(module, recurse=False), group))
    summary = metadata.param_summary(counts)
    if summary.total != count_params(model):  # shared parameters would be counted twice
        raise ExportError("parameter split does not add up (shared parameters?)")
    return summary


def _pair(value: Any) -> int:
    """Square kernels/strides only (the contract's receptive field is one number)."""
    if isinstance(value, (tuple, list)):
        return int(max(value))
    return int(value)


def _padding(module: nn.Module) -> int | None:
    """Pixels of padding before the first row/column, or None when rows and columns
    differ (the contract's geometry is square: the offset is unknown, not wrong)."""
    value = getattr(module, "padding", 0)
    if value == "valid":
        return 0
    if value == "same":  # stride 1; PyTorch puts the smaller half first
        return (_pair(getattr(module, "dilation", 1)) * (_pair(getattr(module, "kernel_size", 1)) - 1)) // 2
    pads = list(value) if isinstance(value, (tuple, list)) else [value]
    return int(pads[0]) if len(set(pads)) == 1 else None


def _adaptive(in_size: int, out_size: int) -> tuple[int, int]:
    """Kernel/stride of adaptive pooling: the largest window and the floor step."""
    stride = max(in_size // out_size, 1)
    kernel = max(-((-(i + 1) * in_size) // out_size) - (i * in_size) // out_size for i in range(out_size))
    return kernel, stride


def receptive_fields(calls: list[Call], input_hw: tuple[int, int]) -> dict[int, Geometry]:
    """Receptive field, stride and offset in input pixels after each main-path leaf call.

    A module that changes the spatial size in a way not modelled here makes everything
    after it unknown (None), rather than wrong.
    """
    geometry = INPUT
    result: dict[int, Geometry] = {}
    for i, call in enumerate(calls):
        if not call.leaf or call.side:
            continue
        m = call.module
        spatial_out = call.out_shape is not None and len(call.out_shape) == 4
        if not geometry.spatial:
            pass
        elif not spatial_out:
            geometry = Geometry(max(input_hw), None, None)
        elif isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            geometry = geometry.window(_pair(m.kernel_size), _pair(m.stride), _pair(m.dilation), _padding(m))
        elif isinstance(m, nn.AvgPool2d):
            geometry = geometry.window(_pair(m.kernel_size), _pair(m.stride), 1, _padding(m))
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            assert call.in_shape is not None and call.out_shape is not None
            k, s = _adaptive(max(call.in_shape[2:]), max(call.out_shape[2:]))
            geometry = geometry.window(k, s, 1, 0)  # windows start at 0: no padding
        elif call.in_shape is None or call.out_shape is None or call.in_shape[2:] != call.out_shape[2:]:
            geometry = UNKNOWN
        result[i] = geometry
    return result


def _conv_behind(calls: list[Call], index: int) -> Call | None:
    """The conv whose filters a map at main-path leaf call `index` shows, if any."""
    main = [i for i, c in enumerate(calls) if c.leaf and not c.side and i <= index]
    for i in reversed(main):
        module = calls[i].module
        if isinstance(module, nn.Conv2d):
            return calls[i]
        if i != index and not isinstance(module, PASS_THROUGH):
            return None
        if i == index and not isinstance(module, ACTIVATIONS + PASS_THROUGH):
            return None
    return None


def describe_taps(
    model: nn.Module, calls: list[Call], taps: list[str], input_hw: tuple[int, int]
) -> list[Layer]:
    """Metadata `layers` entries (without `weight`, filled in after export)."""
    order = last_calls(calls)
    rfs = receptive_fields(calls, input_hw)
    layers = []
    for path in taps:
        index = order[path]
        call = calls[index]
        module = call.module
        # A container (e.g. a ResNet stage) is described by its last main-path leaf.
        leaf_index = index
        if not call.leaf:
            inner = [
                i
                for i in range(index)
                if calls[i].leaf and not calls[i].side and calls[i].path.startswith(path + ".")
            ]
            leaf_index = inner[-1] if inner else index
        conv = _conv_behind(calls, leaf_index) if not calls[leaf_index].side else None
        if isinstance(module, POOLS):
            kind = "pool"
        elif isinstance(module, nn.Linear):
            kind = "linear"
        elif conv is not None:
            kind = "conv"
        elif isinstance(module, ACTIVATIONS):
            kind = "activation"
        else:
            kind = "other"
        if kind != "conv":
            conv = None
        geometry = rfs.get(leaf_index, UNKNOWN)
        cm = conv.module if conv is not None else None
        assert cm is None or isinstance(cm, nn.Conv2d)
        assert call.out_shape is not None
        # "Params of the module that made it": for an activation/BN behind a conv the
        # conv made the map; containers count everything inside them.
        producer = cm if cm is not None and call.leaf and module is not cm else module
        entry = Layer(
            name=path,
            op=type(module).__name__,
            kind=kind,
            conv=conv.path if conv else None,
            weight=None,  # the initializer's name is known after export (pipeline._write_model)
            kernel_size=list(cm.kernel_size) if cm is not None else None,
            out_channels=cm.out_channels if cm is not None else None,
            in_channels=cm.in_channels if cm is not None else None,
            output_shape=[-1, *call.out_shape[1:]],
            params=count_params(producer),
            receptive_field=geometry.receptive_field,
            stride=geometry.stride,
            receptive_field_offset=geometry.offset,
        )
        layers.append(entry)
    return layers
