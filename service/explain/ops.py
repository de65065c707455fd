"""The ONNX operations a head may contain, in numpy: each with its forward and, where the
gradient has a closed form, its vector-Jacobian product, plus the conditions under which
that product is exact (``OpSpec.check``).

Two kinds of use (head.py decides which for each node of a head):

- on the data path (some input depends on the tapped layer): forward and VJP, both exact
  in float32 like the model; the op must be in ``OPS`` with a ``vjp`` and pass its check.
- off it (shapes and constants: everything computed from Shape/Size or from constants
  only): evaluated, never differentiated; any op with a forward will do.

QuantizeLinear and DequantizeLinear (an int8 version's Q/DQ pairs) replay exactly forward.
Their gradient is the straight-through estimator: a pair passes the upstream gradient on
unchanged, as the float function the int8 graph approximates would (rounding's own
derivative is zero almost everywhere, and a saturated value's too: an explanation would go
blank wherever the image leaves the calibrated range). One exception: a pair whose range
starts at 0 (its zero point is the bottom of the int8 range) may stand for a ReLU the
quantizer folded into it and removed, and passes no gradient for values below 0, as that
ReLU did. Grad-CAM on an int8 version is then the float version's gradient taken through the
int8 version's values.

Elementwise activations follow PyTorch's conventions at the kinks (ReLU6 and Clip pass no
gradient at their bounds, HardSwish the slope of its middle piece at -3 and 3), so the
gradient equals autograd's even where a derivative does not exist.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper, numpy_helper

Array = np.ndarray
Attrs = Mapping[str, Any]
Values = list[Array | None]
Forward = Callable[[Values, Attrs], list[Array]]
Vjp = Callable[[Array, Values, list[Array], Attrs, list[bool]], list[Array | None]]
"""(upstream gradient of the first output, inputs, outputs, attrs, which inputs depend on
the layer) -> one gradient per input (None where none flows)."""


@dataclass(frozen=True)
class NodeView:
    """What a check sees of one node: its op, attributes, which inputs hang on the layer
    and which outputs the graph reads."""

    op: str
    where: str  # "Op (node name)", for messages
    attrs: Attrs
    dependent: tuple[bool, ...]
    outputs_used: tuple[bool, ...]
    opset: int


Check = Callable[[NodeView], str | None]
"""Why the VJP of this node would not be exact, or None."""


@dataclass(frozen=True)
class OpSpec:
    forward: Forward
    vjp: Vjp | None = None  # None: evaluated only, never differentiated
    wrt: tuple[int, ...] | None = (0,)  # inputs the VJP differentiates; None: all of them
    check: Check | None = None
    meta: tuple[int, ...] = ()  # inputs read for their shape or type only (Shape, CastLike)


def _x(inputs: Values, index: int = 0) -> Array:
    value = inputs[index]
    assert value is not None, f"input {index} is missing"
    return value


def _opt(inputs: Values, index: int) -> Array | None:
    return inputs[index] if len(inputs) > index else None


def _f32(value: Array) -> Array:
    out: Array = value.astype(np.float32, copy=False) if value.dtype == np.float64 else value
    return out


# ---- helpers ----------------------------------------------------------------------------

def unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` down to ``shape``: the VJP of numpy broadcasting."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _axes(inputs: Values, attrs: Attrs, index: int = 1) -> list[int] | None:
    given = _opt(inputs, index)
    if given is not None:
        return [int(a) for a in np.asarray(given).reshape(-1)]
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _reduce_axes(x: Array, inputs: Values, attrs: Attrs) -> tuple[int, ...]:
    axes = _axes(inputs, attrs)
    if not axes:
        return () if int(attrs.get("noop_with_empty_axes", 0)) else tuple(range(x.ndim))
    return tuple(sorted(a % x.ndim for a in axes))


def _keep(g: Array, axes: tuple[int, ...], attrs: Attrs) -> Array:
    """The gradient of a reduction with its reduced axes back (as size 1)."""
    if not int(attrs.get("keepdims", 1)):
        for axis in axes:
            g = np.expand_dims(g, axis)
    return g


def _unsqueeze(x: Array, axes: list[int]) -> Array:
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = np.expand_dims(x, axis)
    return x


def _reshape_target(data: Array, shape: Array, allowzero: int) -> list[int]:
    target = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not allowzero:
        target = [data.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return target


def _flatten(x: Array, axis: int) -> Array:
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def constant_value(attrs: Attrs) -> Array:
    """A Constant node's value, in the type ONNX gives it (float32 for value_float(s))."""
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    if "value_float" in attrs or "value_floats" in attrs:
        return np.asarray(attrs.get("value_float", attrs.get("value_floats")), dtype=np.float32)
    if "value_int" in attrs or "value_ints" in attrs:
        return np.asarray(attrs.get("value_int", attrs.get("value_ints")), dtype=np.int64)
    raise ValueError(f"unsupported Constant attribute {sorted(attrs)}")


def _unary(fn: Callable[[Array], Array]) -> Forward:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        return [_f32(fn(_x(inputs)))]

    return run


def _binary(fn: Callable[[Array, Array], Array]) -> Forward:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        return [_f32(fn(_x(inputs, 0), _x(inputs, 1)))]

    return run


def _elementwise(slope: Callable[[Array, Array, Attrs], Array]) -> Vjp:
    """The VJP of an elementwise op: the upstream gradient times its slope at (x, y)."""
    def vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
        return [(g * slope(_x(inputs), outputs[0], attrs)).astype(np.float32, copy=False)]

    return vjp


def _identity_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    return [g.reshape(_x(inputs).shape)]


# ---- elementwise activations --------------------------------------------------------------

def _clip_bounds(inputs: Values, attrs: Attrs) -> tuple[float, float]:
    low, high = _opt(inputs, 1), _opt(inputs, 2)
    lo = _scalar(low) if low is not None else float(attrs.get("min", -np.inf))
    hi = _scalar(high) if high is not None else float(attrs.get("max", np.inf))
    return lo, hi


def _scalar(value: Array) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def _clip(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    lo, hi = _clip_bounds(inputs, attrs)
    return [np.clip(x, lo, hi).astype(x.dtype, copy=False)]


def _clip_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    lo, hi = _clip_bounds(inputs, attrs)
    return [g * ((x > lo) & (x < hi)), None, None]  # hardtanh's (ReLU6's) convention


def _hard_sigmoid(x: Array, attrs: Attrs) -> Array:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    out: Array = np.clip(np.float32(alpha) * x + np.float32(beta), 0, 1)
    return out


def _hard_sigmoid_slope(x: Array, y: Array, attrs: Attrs) -> Array:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    inner = np.float32(alpha) * x + np.float32(beta)
    return np.where((inner > 0) & (inner < 1), np.float32(alpha), np.float32(0))


def _hard_swish_slope(x: Array, y: Array, attrs: Attrs) -> Array:
    # PyTorch: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above.
    return np.where(x < -3, np.float32(0), np.where(x <= 3, x / np.float32(3) + np.float32(0.5), np.float32(1)))


def _sigmoid(x: Array) -> Array:
    out: Array = np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
    return out


_erf = np.vectorize(math.erf, otypes=[np.float64])
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _gelu(x: Array, attrs: Attrs) -> Array:
    x64 = x.astype(np.float64)
    if _approximate(attrs) == "tanh":
        out: Array = 0.5 * x64 * (1 + np.tanh(SQRT_2_OVER_PI * (x64 + 0.044715 * x64**3)))
    else:
        out = 0.5 * x64 * (1 + _erf(x64 / math.sqrt(2)))
    return out


def _gelu_slope(x: Array, y: Array, attrs: Attrs) -> Array:
    x64 = x.astype(np.float64)
    if _approximate(attrs) == "tanh":
        t = np.tanh(SQRT_2_OVER_PI * (x64 + 0.044715 * x64**3))
        slope: Array = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x64**2)
    else:
        slope = 0.5 * (1 + _erf(x64 / math.sqrt(2))) + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    return slope.astype(np.float32)


def _approximate(attrs: Attrs) -> str:
    value = attrs.get("approximate", "none")
    return value.decode() if isinstance(value, bytes) else str(value)


def _elu_slope(x: Array, y: Array, attrs: Attrs) -> Array:
    return np.where(x > 0, np.float32(1), y + np.float32(attrs.get("alpha", 1.0)))


def _pow_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x, p = _x(inputs, 0), _x(inputs, 1).astype(np.float32)
    return [unbroadcast(g * p * np.power(x, p - 1), x.shape).astype(np.float32), None]


def _softmax_2d(x: Array, attrs: Attrs, opset: int) -> tuple[Array, int]:
    """Opsets before 13 softmax the input flattened to 2-D at ``axis`` (default 1)."""
    if opset >= 13:
        return x, int(attrs.get("axis", -1))
    return _flatten(x, int(attrs.get("axis", 1))), -1


def _softmax(log: bool) -> Forward:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        x = _x(inputs)
        flat, axis = _softmax_2d(x, attrs, int(attrs.get("_opset", 13)))
        shifted = flat.astype(np.float64) - flat.max(axis=axis, keepdims=True)
        logsum = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        out = shifted - logsum if log else np.exp(shifted - logsum)
        return [out.astype(np.float32).reshape(x.shape)]

    return run


def _softmax_vjp(log: bool) -> Vjp:
    def vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
        x = _x(inputs)
        opset = int(attrs.get("_opset", 13))
        y, axis = _softmax_2d(outputs[0], attrs, opset)
        g2, _ = _softmax_2d(g, attrs, opset)
        if log:
            grad = g2 - np.exp(y) * g2.sum(axis=axis, keepdims=True)
        else:
            grad = y * (g2 - (g2 * y).sum(axis=axis, keepdims=True))
        return [grad.astype(np.float32).reshape(x.shape)]

    return vjp


# ---- arithmetic --------------------------------------------------------------------------

def _div(a: Array, b: Array) -> Array:
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        out: Array = np.trunc(a / b).astype(np.result_type(a, b))  # ONNX integer Div truncates
        return out
    result: Array = a / b
    return result


def _add_vjp(sign: float) -> Vjp:
    def vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
        a, b = _x(inputs, 0), _x(inputs, 1)
        return [unbroadcast(g, a.shape) if dep[0] else None, unbroadcast(sign * g, b.shape) if dep[1] else None]

    return vjp


def _mul_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    a, b = _x(inputs, 0), _x(inputs, 1)
    return [unbroadcast(g * b, a.shape) if dep[0] else None, unbroadcast(g * a, b.shape) if dep[1] else None]


def _div_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    a, b = _x(inputs, 0), _x(inputs, 1)
    return [unbroadcast(g / b, a.shape) if dep[0] else None,
            unbroadcast(-g * outputs[0] / b, b.shape) if dep[1] else None]


def _matmul_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    # numpy's matmul drops the row of a 1-D left operand and the column of a 1-D right
    # one: put them back, differentiate [..., M, K] @ [..., K, N], then drop them again.
    a, b = _x(inputs, 0), _x(inputs, 1)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = g.shape[: g.ndim - (a.ndim > 1) - (b.ndim > 1)]
    g2 = g.reshape(*batch, a2.shape[-2], b2.shape[-1])
    ga = gb = None
    if dep[0]:
        grad = g2 @ np.swapaxes(b2, -1, -2)
        ga = unbroadcast(grad[..., 0, :] if a.ndim == 1 else grad, a.shape)
    if dep[1]:
        grad = np.swapaxes(a2, -1, -2) @ g2
        gb = unbroadcast(grad[..., 0] if b.ndim == 1 else grad, b.shape)
    return [ga, gb]


def _gemm_operands(inputs: Values, attrs: Attrs) -> tuple[Array, Array]:
    a, b = _x(inputs, 0), _x(inputs, 1)
    return (a.T if attrs.get("transA", 0) else a), (b.T if attrs.get("transB", 0) else b)


def _gemm(inputs: Values, attrs: Attrs) -> list[Array]:
    a, b = _gemm_operands(inputs, attrs)
    y = np.float32(attrs.get("alpha", 1.0)) * (a @ b)
    c = _opt(inputs, 2)
    if c is not None:
        y = y + np.float32(attrs.get("beta", 1.0)) * c
    return [y.astype(np.float32, copy=False)]


def _gemm_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    _, b = _gemm_operands(inputs, attrs)
    grad = np.float32(attrs.get("alpha", 1.0)) * (g @ b.T)
    c = _opt(inputs, 2)
    gc = unbroadcast(np.float32(attrs.get("beta", 1.0)) * g, c.shape) if c is not None and len(dep) > 2 and dep[2] else None
    return [(grad.T if attrs.get("transA", 0) else grad) if dep[0] else None, None, gc]


# ---- normalisation -----------------------------------------------------------------------

def _batch_norm_affine(inputs: Values, attrs: Attrs, ndim: int) -> tuple[Array, Array]:
    scale, bias, mean, var = (np.asarray(_x(inputs, i), dtype=np.float32) for i in range(1, 5))
    factor = scale / np.sqrt(var + np.float32(attrs.get("epsilon", 1e-5)))
    shape = (1, -1) + (1,) * (ndim - 2)
    return factor.reshape(shape), (bias - mean * factor).reshape(shape)


def _batch_norm(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    factor, shift = _batch_norm_affine(inputs, attrs, x.ndim)
    return [(x * factor + shift).astype(np.float32)]


def _batch_norm_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    factor, _ = _batch_norm_affine(inputs, attrs, _x(inputs).ndim)
    return [g * factor, None, None, None, None]


def _layer_norm_parts(x: Array, attrs: Attrs) -> tuple[tuple[int, ...], Array, Array]:
    axis = int(attrs.get("axis", -1)) % x.ndim
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float32)
    centred = x - mean
    inv = 1 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True, dtype=np.float32)
                      + np.float32(attrs.get("epsilon", 1e-5)))
    return axes, centred * inv, inv


def _layer_norm(inputs: Values, attrs: Attrs) -> list[Array]:
    _, normed, _ = _layer_norm_parts(_x(inputs), attrs)
    y = normed * _x(inputs, 1)
    bias = _opt(inputs, 2)
    return [(y + bias if bias is not None else y).astype(np.float32)]


def _layer_norm_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    axes, normed, inv = _layer_norm_parts(_x(inputs), attrs)
    gn = g * _x(inputs, 1)
    grad = inv * (gn - gn.mean(axis=axes, keepdims=True) - normed * (gn * normed).mean(axis=axes, keepdims=True))
    return [grad.astype(np.float32), None, None]


# ---- pooling and reductions ------------------------------------------------------------

def _pool_geometry(x: Array, attrs: Attrs) -> tuple[list[int], list[int], list[int], list[int]]:
    """kernel, strides, pads [top, left, bottom, right] (ceil_mode folded into the end
    pads), output size."""
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1, 1])]
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    size = []
    for axis in range(2):
        span = x.shape[2 + axis] + pads[axis] + pads[axis + 2] - kernel[axis]
        steps = -(-span // strides[axis]) if int(attrs.get("ceil_mode", 0)) else span // strides[axis]
        if int(attrs.get("ceil_mode", 0)) and steps * strides[axis] >= x.shape[2 + axis] + pads[axis]:
            steps -= 1  # the last window must start inside the input or its left padding
        size.append(steps + 1)
        extra = (size[axis] - 1) * strides[axis] + kernel[axis] - (x.shape[2 + axis] + pads[axis] + pads[axis + 2])
        pads[axis + 2] += max(0, extra)
    return kernel, strides, pads, size


def _windows(padded: Array, kernel: list[int], strides: list[int], size: list[int]) -> Array:
    view = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(2, 3))
    return view[:, :, : size[0] * strides[0] : strides[0], : size[1] * strides[1] : strides[1]]


def _pad(x: Array, pads: list[int], value: float) -> Array:
    return np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=value)


def _max_pool(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    windows = _windows(_pad(x, pads, -np.inf), kernel, strides, size)
    return [windows.max(axis=(-2, -1)).astype(np.float32)]


def _avg_pool(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    total = _windows(_pad(x, pads, 0.0), kernel, strides, size).sum(axis=(-2, -1))
    return [(total / _pool_counts(x, attrs, kernel, strides, pads, size)).astype(np.float32)]


def _pool_counts(x: Array, attrs: Attrs, kernel: list[int], strides: list[int], pads: list[int],
                 size: list[int]) -> Array:
    if int(attrs.get("count_include_pad", 0)):
        return np.full(size, float(kernel[0] * kernel[1]))
    ones = np.ones((1, 1, *x.shape[2:]), dtype=np.float32)
    counts: Array = _windows(_pad(ones, pads, 0.0), kernel, strides, size).sum(axis=(-2, -1))[0, 0]
    return counts


def _max_pool_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    # The gradient goes to each window's maximum (the first one on ties, like PyTorch).
    x = _x(inputs)
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    padded = _pad(x, pads, -np.inf)
    windows = _windows(padded, kernel, strides, size)
    arg = windows.reshape(*windows.shape[:4], -1).argmax(axis=-1)
    rows = np.arange(size[0])[:, None] * strides[0] + arg // kernel[1]
    cols = np.arange(size[1])[None, :] * strides[1] + arg % kernel[1]
    grad = np.zeros(padded.shape, dtype=np.float32)
    n_idx, c_idx = np.indices(arg.shape[:2])
    np.add.at(grad, (n_idx[..., None, None], c_idx[..., None, None], rows, cols), g)
    return [grad[:, :, pads[0] : pads[0] + x.shape[2], pads[1] : pads[1] + x.shape[3]]]


def _avg_pool_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    kernel, strides, pads, size = _pool_geometry(x, attrs)
    share = g / _pool_counts(x, attrs, kernel, strides, pads, size)
    padded = np.zeros((x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[2], x.shape[3] + pads[1] + pads[3]),
                      dtype=np.float32)
    for dy in range(kernel[0]):
        for dx in range(kernel[1]):
            padded[:, :, dy : dy + size[0] * strides[0] : strides[0], dx : dx + size[1] * strides[1] : strides[1]] += share
    return [padded[:, :, pads[0] : pads[0] + x.shape[2], pads[1] : pads[1] + x.shape[3]]]


def _global_avg_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    return [np.broadcast_to(g / np.float32(np.prod(x.shape[2:])), x.shape).astype(np.float32)]


def _global_max_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    flat = x.reshape(*x.shape[:2], -1)
    grad = np.zeros_like(flat)
    n_idx, c_idx = np.indices(x.shape[:2])
    grad[n_idx, c_idx, flat.argmax(axis=-1)] = g.reshape(*x.shape[:2])
    return [grad.reshape(x.shape)]


def _reduce(fn: Callable[..., Array]) -> Forward:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        x = _x(inputs)
        axes = _reduce_axes(x, inputs, attrs)
        if not axes:
            return [x]
        out = fn(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))
        return [np.asarray(out, dtype=np.float32) if x.dtype == np.float32 else np.asarray(out, dtype=x.dtype)]

    return run


def _reduce_vjp(mean: bool) -> Vjp:
    def vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
        x = _x(inputs)
        axes = _reduce_axes(x, inputs, attrs)
        if not axes:
            return [g, None]
        count = int(np.prod([x.shape[a] for a in axes])) if mean else 1
        return [np.broadcast_to(_keep(g, axes, attrs) / np.float32(count), x.shape).astype(np.float32), None]

    return vjp


# ---- convolution (1 x 1: a classifier's) -------------------------------------------------

def _conv(inputs: Values, attrs: Attrs) -> list[Array]:
    x, weight = _x(inputs, 0), _x(inputs, 1)
    y = np.einsum("oc,nc...->no...", weight.reshape(weight.shape[0], -1), x, optimize=True)
    bias = _opt(inputs, 2)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * (x.ndim - 2))
    return [y.astype(np.float32, copy=False)]


def _conv_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    weight = _x(inputs, 1)
    grad = np.einsum("oc,no...->nc...", weight.reshape(weight.shape[0], -1), g, optimize=True)
    return [grad.astype(np.float32, copy=False), None, None]


# ---- quantization (an int8 version's Q/DQ pairs) ---------------------------------------------

def _per_axis(value: Array, x: Array, attrs: Attrs) -> Array:
    """A scale or zero point (a scalar, or one per index of ``axis``) shaped to broadcast over x."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1 or x.ndim == 0:
        return value.reshape(())
    axis = int(attrs.get("axis", 1)) % x.ndim
    shape = [1] * x.ndim
    shape[axis] = -1
    return value.reshape(shape)


def _zero_point(inputs: Values, index: int) -> Array:
    zero = _opt(inputs, index)
    return np.asarray(zero) if zero is not None else np.zeros((), dtype=np.uint8)


def _dequantize(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    scale = _x(inputs, 1)
    zero = _per_axis(_zero_point(inputs, 2), x, attrs).astype(np.int32)
    y = (x.astype(np.int32) - zero).astype(np.float32) * _per_axis(scale, x, attrs).astype(np.float32)
    return [y.astype(np.float32, copy=False)]


def _dequantize_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs,
                    dep: list[bool]) -> list[Array | None]:
    # d y / d x = scale: the gradient reaching the int8 values (QuantizeLinear divides it back).
    x = _x(inputs)
    return [(g * _per_axis(_x(inputs, 1), x, attrs)).astype(np.float32), None, None]


def _quantize_range(inputs: Values) -> tuple[Array, int, int]:
    zero = _zero_point(inputs, 2)
    info = np.iinfo(zero.dtype)
    return zero, int(info.min), int(info.max)


def _quantize(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    zero, low, high = _quantize_range(inputs)
    scaled = np.rint(x.astype(np.float32) / _per_axis(_x(inputs, 1), x, attrs).astype(np.float32))  # half to even
    q = np.clip(scaled + _per_axis(zero, x, attrs).astype(np.float32), low, high)
    return [q.astype(zero.dtype)]


def _quantize_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    zero, low, _ = _quantize_range(inputs)
    scale = _per_axis(_x(inputs, 1), x, attrs).astype(np.float32)
    # Divided by the scale: DequantizeLinear's gradient multiplies it back (straight through).
    grad = g / scale
    folded_relu = _per_axis(zero, x, attrs) == low  # the range starts at 0
    if np.any(folded_relu):
        # Only values below 0: at 0 itself the value may be a ReLU's output read on (a pool or
        # a flatten after the layer's own ReLU), whose float gradient flows.
        grad = np.where(folded_relu & (x < 0), np.float32(0), grad)
    return [grad.astype(np.float32), None, None]


def _quantize_check(view: NodeView) -> str | None:
    if "block_size" in view.attrs and int(view.attrs["block_size"]):
        return f"{view.where} quantizes in blocks, which the replay does not implement"
    if "output_dtype" in view.attrs and int(view.attrs["output_dtype"]):
        return f"{view.where} names its output type (output_dtype), which the replay does not implement"
    return None


# ---- moving values around ----------------------------------------------------------------

def _transpose_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    perm = attrs.get("perm")
    return [np.transpose(g) if perm is None else np.transpose(g, np.argsort(perm))]


def _concat(inputs: Values, attrs: Attrs) -> list[Array]:
    return [np.concatenate([v for v in inputs if v is not None], axis=int(attrs["axis"]))]


def _concat_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    axis = int(attrs["axis"]) % g.ndim
    edges = np.cumsum([v.shape[axis] if v is not None else 0 for v in inputs])[:-1]
    parts = np.split(g, edges, axis=axis)
    return [part if flag else None for part, flag in zip(parts, dep)]


def _gather(inputs: Values, attrs: Attrs) -> list[Array]:
    data, indices = _x(inputs, 0), _x(inputs, 1)
    return [np.take(data, indices.astype(np.int64), axis=int(attrs.get("axis", 0)))]


def _gather_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    data, indices = _x(inputs, 0), _x(inputs, 1).astype(np.int64)
    axis = int(attrs.get("axis", 0)) % data.ndim
    grad = np.zeros(data.shape, dtype=np.float32)
    moved = np.moveaxis(grad, axis, 0)  # a view: [data axis, the other axes in order]
    upstream = np.moveaxis(g, list(range(axis, axis + indices.ndim)), list(range(indices.ndim)))
    np.add.at(moved, indices % data.shape[axis], upstream)
    return [grad, None]


def _slices(x: Array, inputs: Values, attrs: Attrs) -> tuple[slice, ...]:
    if _opt(inputs, 1) is not None:  # opset 10 and later: starts, ends, axes, steps as inputs
        starts, ends = (np.asarray(_x(inputs, i)).reshape(-1) for i in (1, 2))
        axes_in, steps_in = _opt(inputs, 3), _opt(inputs, 4)
        axes = np.asarray(axes_in).reshape(-1) if axes_in is not None else np.arange(len(starts))
        steps = np.asarray(steps_in).reshape(-1) if steps_in is not None else np.ones(len(starts), np.int64)
    else:
        starts, ends = np.asarray(attrs["starts"]), np.asarray(attrs["ends"])
        axes = np.asarray(attrs.get("axes", range(len(starts))))
        steps = np.ones(len(starts), np.int64)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis) % x.ndim] = slice(int(start), int(end), int(step))
    return tuple(index)


def _slice(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    return [x[_slices(x, inputs, attrs)]]


def _slice_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    x = _x(inputs)
    grad = np.zeros(x.shape, dtype=np.float32)
    grad[_slices(x, inputs, attrs)] = g
    return [grad]


def _cast(inputs: Values, attrs: Attrs) -> list[Array]:
    return [_x(inputs).astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))]


def _cast_vjp(g: Array, inputs: Values, outputs: list[Array], attrs: Attrs, dep: list[bool]) -> list[Array | None]:
    return [g.astype(_x(inputs).dtype), None]


def _shape(inputs: Values, attrs: Attrs) -> list[Array]:
    shape = _x(inputs).shape
    end = attrs.get("end")
    return [np.asarray(shape[int(attrs.get("start", 0)) : None if end is None else int(end)], dtype=np.int64)]


def _constant_of_shape(inputs: Values, attrs: Attrs) -> list[Array]:
    value = numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    return [np.full([int(d) for d in _x(inputs)], value.reshape(-1)[0], dtype=value.dtype)]


def _range(inputs: Values, attrs: Attrs) -> list[Array]:
    start, limit, delta = (_x(inputs, i) for i in range(3))
    dtype = np.result_type(start, limit, delta)
    return [np.arange(start.item(), limit.item(), delta.item()).astype(dtype)]


def _squeeze(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    axes = _axes(inputs, attrs)
    return [np.squeeze(x, axis=tuple(axes) if axes else tuple(d for d in range(x.ndim) if x.shape[d] == 1))]


def _expand(inputs: Values, attrs: Attrs) -> list[Array]:
    x, shape = _x(inputs, 0), [int(d) for d in _x(inputs, 1)]
    target = np.broadcast_shapes(x.shape, tuple(shape))
    return [np.broadcast_to(x, target).copy()]


def _where(inputs: Values, attrs: Attrs) -> list[Array]:
    return [np.where(_x(inputs, 0), _x(inputs, 1), _x(inputs, 2))]


def _variadic(fn: Callable[[Array, Array], Array]) -> Forward:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        values = [v for v in inputs if v is not None]
        out = values[0]
        for value in values[1:]:
            out = fn(out, value)
        return [out]

    return run


# ---- checks ------------------------------------------------------------------------------

def _only_first_output(view: NodeView) -> str | None:
    if any(view.outputs_used[1:]):
        return f"{view.where} uses its extra outputs (a training-time form); export the model in eval mode"
    return None


def _dropout_check(view: NodeView) -> str | None:
    if len(view.dependent) > 2 and view.dependent[2]:
        return f"{view.where} takes its training mode from the layer's values"
    return _only_first_output(view)


def _batch_norm_check(view: NodeView) -> str | None:
    if int(view.attrs.get("training_mode", 0)):
        return f"{view.where} is in training mode; export the model in eval mode"
    return _only_first_output(view)


def _pool_check(view: NodeView) -> str | None:
    attrs, where = view.attrs, view.where
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return f"{where} uses auto_pad, which the replay does not implement; export with explicit pads"
    if any(d != 1 for d in attrs.get("dilations", [1])):
        return f"{where} is dilated, which the replay does not implement"
    if view.op == "AveragePool" and int(attrs.get("ceil_mode", 0)):
        return f"{where} uses ceil_mode, which the replay does not implement for average pooling"
    if len(attrs.get("kernel_shape", [])) != 2:
        return f"{where} is not a 2-D pool"
    return _only_first_output(view)


def _conv_check(view: NodeView) -> str | None:
    attrs = view.attrs
    kernel = [int(k) for k in attrs.get("kernel_shape", [])]
    plain = (all(int(s) == 1 for s in attrs.get("strides", [1])) and not any(int(p) for p in attrs.get("pads", [0]))
             and all(int(d) == 1 for d in attrs.get("dilations", [1])) and int(attrs.get("group", 1)) == 1
             and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID"))
    if not kernel or any(k != 1 for k in kernel) or not plain:
        shape = "x".join(str(k) for k in kernel) or "?"
        return (f"{view.where} is a {shape} convolution (stride, padding or groups included): the numpy replay "
                "differentiates only plain 1x1 convolutions, a classifier's; tap a layer after it")
    return None


def _cast_check(view: NodeView) -> str | None:
    if not np.issubdtype(helper.tensor_dtype_to_np_dtype(int(view.attrs["to"])), np.floating):
        return f"{view.where} casts the layer's values to a non-float type (no gradient through it)"
    return None


def _activation(forward: Callable[[Array, Attrs], Array], slope: Callable[[Array, Array, Attrs], Array]) -> OpSpec:
    def run(inputs: Values, attrs: Attrs) -> list[Array]:
        return [_f32(forward(_x(inputs), attrs))]

    return OpSpec(run, _elementwise(slope))


def _reshape(inputs: Values, attrs: Attrs) -> list[Array]:
    x = _x(inputs)
    return [x.reshape(_reshape_target(x, _x(inputs, 1), int(attrs.get("allowzero", 0))))]


OPS: dict[str, OpSpec] = {
    # moving values around
    "Identity": OpSpec(lambda i, a: [_x(i)], _identity_vjp),
    "Dropout": OpSpec(lambda i, a: [_x(i)], _identity_vjp, check=_dropout_check),
    "Flatten": OpSpec(lambda i, a: [_flatten(_x(i), int(a.get("axis", 1)))], _identity_vjp),
    "Reshape": OpSpec(_reshape, _identity_vjp),
    "Squeeze": OpSpec(_squeeze, _identity_vjp),
    "Unsqueeze": OpSpec(lambda i, a: [_unsqueeze(_x(i), _axes(i, a) or [])], _identity_vjp),
    "Transpose": OpSpec(lambda i, a: [np.transpose(_x(i), a.get("perm"))], _transpose_vjp),
    "Concat": OpSpec(_concat, _concat_vjp, wrt=None),
    "Gather": OpSpec(_gather, _gather_vjp),
    "Slice": OpSpec(_slice, _slice_vjp),
    "Cast": OpSpec(_cast, _cast_vjp, check=_cast_check),
    "CastLike": OpSpec(lambda i, a: [_x(i, 0).astype(_x(i, 1).dtype)], _cast_vjp, meta=(1,)),
    # activations
    "Relu": _activation(lambda x, a: np.maximum(x, 0), lambda x, y, a: x > 0),
    "LeakyRelu": _activation(lambda x, a: np.where(x > 0, x, x * np.float32(a.get("alpha", 0.01))),
                             lambda x, y, a: np.where(x > 0, np.float32(1), np.float32(a.get("alpha", 0.01)))),
    "Clip": OpSpec(_clip, _clip_vjp),
    "HardSigmoid": _activation(_hard_sigmoid, _hard_sigmoid_slope),
    "HardSwish": _activation(lambda x, a: x * _hard_sigmoid(x, {"alpha": 1 / 6, "beta": 0.5}), _hard_swish_slope),
    "Sigmoid": _activation(lambda x, a: _sigmoid(x), lambda x, y, a: y * (1 - y)),
    "Tanh": _activation(lambda x, a: np.tanh(x), lambda x, y, a: 1 - y * y),
    "Gelu": _activation(_gelu, _gelu_slope),
    "Erf": _activation(lambda x, a: _erf(x), lambda x, y, a: (2 / math.sqrt(math.pi)) * np.exp(-(x.astype(np.float64) ** 2))),
    "Elu": _activation(lambda x, a: np.where(x > 0, x, np.float32(a.get("alpha", 1.0)) * np.expm1(np.minimum(x, 0))),
                       _elu_slope),
    "Softplus": _activation(lambda x, a: np.logaddexp(0, x), lambda x, y, a: _sigmoid(x)),
    "Exp": _activation(lambda x, a: np.exp(x), lambda x, y, a: y),
    "Log": _activation(lambda x, a: np.log(x), lambda x, y, a: 1 / x),
    "Sqrt": _activation(lambda x, a: np.sqrt(x), lambda x, y, a: 0.5 / y),
    "Reciprocal": _activation(lambda x, a: 1 / x, lambda x, y, a: -y * y),
    "Neg": _activation(lambda x, a: -x, lambda x, y, a: np.full_like(x, -1)),
    "Abs": _activation(lambda x, a: np.abs(x), lambda x, y, a: np.sign(x)),
    "Softmax": OpSpec(_softmax(log=False), _softmax_vjp(log=False)),
    "LogSoftmax": OpSpec(_softmax(log=True), _softmax_vjp(log=True)),
    # arithmetic
    "Add": OpSpec(_binary(np.add), _add_vjp(1.0), wrt=(0, 1)),
    "Sub": OpSpec(_binary(np.subtract), _add_vjp(-1.0), wrt=(0, 1)),
    "Mul": OpSpec(_binary(np.multiply), _mul_vjp, wrt=(0, 1)),
    "Div": OpSpec(_binary(_div), _div_vjp, wrt=(0, 1)),
    "Pow": OpSpec(_binary(lambda a, b: np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b)), _pow_vjp),
    "MatMul": OpSpec(_binary(np.matmul), _matmul_vjp, wrt=(0, 1)),
    "Gemm": OpSpec(_gemm, _gemm_vjp, wrt=(0, 2)),
    "Conv": OpSpec(_conv, _conv_vjp, check=_conv_check),
    # quantization: exact forward, clipped straight-through gradient
    "QuantizeLinear": OpSpec(_quantize, _quantize_vjp, check=_quantize_check),
    "DequantizeLinear": OpSpec(_dequantize, _dequantize_vjp, check=_quantize_check),
    # normalisation
    "BatchNormalization": OpSpec(_batch_norm, _batch_norm_vjp, check=_batch_norm_check),
    "LayerNormalization": OpSpec(_layer_norm, _layer_norm_vjp, check=_only_first_output),
    # pooling and reductions
    "MaxPool": OpSpec(_max_pool, _max_pool_vjp, check=_pool_check),
    "AveragePool": OpSpec(_avg_pool, _avg_pool_vjp, check=_pool_check),
    "GlobalAveragePool": OpSpec(_unary(lambda x: x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32)),
                                _global_avg_vjp),
    "GlobalMaxPool": OpSpec(_unary(lambda x: x.max(axis=tuple(range(2, x.ndim)), keepdims=True)), _global_max_vjp),
    "ReduceMean": OpSpec(_reduce(np.mean), _reduce_vjp(mean=True)),
    "ReduceSum": OpSpec(_reduce(np.sum), _reduce_vjp(mean=False)),
    # shapes and constants only: evaluated, never differentiated
    "Constant": OpSpec(lambda i, a: [constant_value(a)]),
    "Shape": OpSpec(_shape, meta=(0,)),
    "Size": OpSpec(lambda i, a: [np.asarray(_x(i).size, dtype=np.int64)], meta=(0,)),
    "ConstantOfShape": OpSpec(_constant_of_shape),
    "Range": OpSpec(_range),
    "Expand": OpSpec(_expand),
    "Where": OpSpec(_where),
    "Equal": OpSpec(_binary(np.equal)),
    "Less": OpSpec(_binary(np.less)),
    "Greater": OpSpec(_binary(np.greater)),
    "Not": OpSpec(_unary(np.logical_not)),
    "ReduceProd": OpSpec(_reduce(np.prod)),
    "Max": OpSpec(_variadic(np.maximum)),
    "Min": OpSpec(_variadic(np.minimum)),
    "Floor": OpSpec(_unary(np.floor)),
    "Ceil": OpSpec(_unary(np.ceil)),
    "Mod": OpSpec(lambda i, a: [(np.fmod if int(a.get("fmod", 0)) else np.mod)(_x(i, 0), _x(i, 1))]),
}

# Inputs that must never depend on the layer, by op: a shape, axes, bounds or weights
# computed from the layer's values would make the function something else than a fixed
# head (Reshape's shape, Clip's bounds, Gemm's weights...).
ROLES: dict[str, Sequence[str]] = {
    "Reshape": ("data", "its target shape"), "Squeeze": ("data", "its axes"), "Unsqueeze": ("data", "its axes"),
    "Gather": ("data", "its indices"), "Slice": ("data", "its starts", "its ends", "its axes", "its steps"),
    "Clip": ("data", "its lower bound", "its upper bound"), "Pow": ("data", "its exponent"),
    "Gemm": ("data", "its weights", "its bias"), "Conv": ("data", "its weights", "its bias"),
    "BatchNormalization": ("data", "its scale", "its bias", "its running mean", "its running variance"),
    "LayerNormalization": ("data", "its scale", "its bias"), "Dropout": ("data", "its ratio", "its training mode"),
    "ReduceMean": ("data", "its axes"), "ReduceSum": ("data", "its axes"),
    "QuantizeLinear": ("data", "its scale", "its zero point"),
    "DequantizeLinear": ("data", "its scale", "its zero point"),
}


def role(op: str, index: int) -> str:
    names = ROLES.get(op, ())
    return names[index] if index < len(names) else f"its input {index}"
