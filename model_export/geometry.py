"""Where a feature-map unit looks in the input: receptive field, stride, offset.

Shared by both ways into an artifact (the PyTorch trace in layers.py, the ONNX graph
walk in graph_geometry.py) and by the channel view, which turns a unit's position into
a box of input pixels. Torch-free.

Through one sliding window (kernel k, stride s, dilation d, padding p before the first
row), unit i of the output reads units i*s - p .. i*s - p + (k-1)*d of its input, so

    rf'     = rf + (k - 1) * d * jump
    offset' = offset - p * jump
    jump'   = jump * s

starting from the input itself (rf 1, jump 1, offset 0).

Rows and columns are two such recurrences (an `Axis` each). Where they agree, one
number says both (the contract's square `receptive_field`, `stride`,
`receptive_field_offset`); where they differ (a 48x192 input with 1x7 kernels or 1x2
strides), the `_hw` fields hold [rows, columns] and the square fields hold the smallest
square window that contains the field, as documented in docs/artifact.md.

A unit's field is its window clipped to the image, or to `bounds` where the layer's
units see less than the whole image: a window reaching past the last unit of an earlier
map reads padding there (a ceil_mode pool after an unpadded stride-2 conv that never
read the image's last column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Axis:
    """One image axis of a map: unit i sees input pixels offset + i * stride ..
    offset + i * stride + receptive_field - 1 along it."""

    receptive_field: int
    stride: int
    offset: int

    def window(self, index: int) -> tuple[int, int]:
        """[first, last + 1) pixels unit `index` sees, unclipped."""
        first = self.offset + index * self.stride
        return first, first + self.receptive_field


@dataclass(frozen=True)
class Geometry:
    """Unit (y, x) of a map sees input rows offset + y * stride .. offset + y * stride
    + receptive_field - 1, and the same columns; offset < 0 where the first unit's
    window starts in the padding. None where it is unknown (a graph not modelled here)
    or, for stride and offset, where the output is not spatial (it sees the whole
    input).

    Where rows and columns differ, the `_hw` fields hold (rows, columns) and the square
    fields the smallest square window holding the field; they are None when there is
    none (the strides differ), except receptive_field: the larger one.

    bounds: (left, top, right, bottom), right and bottom exclusive: the input pixels any
    unit sees at all, where that is less than the whole image; boxes are clipped to it."""

    receptive_field: int | None
    stride: int | None
    offset: int | None
    receptive_field_hw: tuple[int, int] | None = None
    stride_hw: tuple[int, int] | None = None
    offset_hw: tuple[int, int] | None = None
    bounds: tuple[int, int, int, int] | None = None

    @classmethod
    def of_axes(cls, rows: Axis, cols: Axis, bounds: tuple[int, int, int, int] | None = None) -> Geometry:
        """The geometry of a map whose rows and columns are `rows` and `cols`."""
        if rows == cols:
            return cls(rows.receptive_field, rows.stride, rows.offset, bounds=bounds)
        hw = (
            (rows.receptive_field, cols.receptive_field),
            (rows.stride, cols.stride),
            (rows.offset, cols.offset),
        )
        if rows.stride != cols.stride:
            return cls(max(rows.receptive_field, cols.receptive_field), None, None, *hw, bounds)
        offset = min(rows.offset, cols.offset)
        end = max(rows.offset + rows.receptive_field, cols.offset + cols.receptive_field)
        return cls(end - offset, rows.stride, offset, *hw, bounds)

    @classmethod
    def whole(cls, size: tuple[int, int] | None) -> Geometry:
        """A value that is not a map: it sees the whole (H, W) input (None: size unknown)."""
        if size is None:
            return UNKNOWN
        height, width = size
        return cls(max(height, width), None, None, (height, width) if height != width else None)

    @classmethod
    def of_layer(cls, layer: Any) -> Geometry:
        """From a contract record (artifact.Layer, or anything with its field names)."""
        return cls(
            layer.receptive_field,
            layer.stride,
            layer.receptive_field_offset,
            _pair(getattr(layer, "receptive_field_hw", None)),
            _pair(getattr(layer, "stride_hw", None)),
            _pair(getattr(layer, "receptive_field_offset_hw", None)),
            _box(getattr(layer, "receptive_field_bounds", None)),
        )

    @property
    def whole_image(self) -> bool:
        """A value that is not a map (a global pool, a Flatten): it sees the whole image."""
        return self.receptive_field is not None and self.stride is None and self.stride_hw is None

    @property
    def spatial(self) -> bool:
        return self.receptive_field is not None and (self.stride is not None or self.stride_hw is not None)

    @property
    def axes(self) -> tuple[Axis, Axis] | None:
        """(rows, columns), or None where the map's geometry is not fully known."""
        if self.receptive_field_hw is not None and self.stride_hw is not None and self.offset_hw is not None:
            return (
                Axis(self.receptive_field_hw[0], self.stride_hw[0], self.offset_hw[0]),
                Axis(self.receptive_field_hw[1], self.stride_hw[1], self.offset_hw[1]),
            )
        if self.receptive_field is None or self.stride is None or self.offset is None:
            return None
        axis = Axis(self.receptive_field, self.stride, self.offset)
        return axis, axis

    def window(self, kernel: int, stride: int, dilation: int, padding: int | None) -> Geometry:
        """After one square sliding window; a padding of None (rows and columns padded
        differently) leaves the offset unknown, not wrong."""
        if self.receptive_field is None or self.stride is None:
            return UNKNOWN
        jump = self.stride
        offset = self.offset - padding * jump if self.offset is not None and padding is not None else None
        return Geometry(self.receptive_field + (kernel - 1) * dilation * jump, jump * stride, offset)

    def padded(self, padding: int | None) -> Geometry:
        """After explicit square padding: the grid shifts, the field does not."""
        if self.stride is None:
            return UNKNOWN
        offset = self.offset - padding * self.stride if self.offset is not None and padding is not None else None
        return Geometry(self.receptive_field, self.stride, offset)


def _pair(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _box(value: Any) -> tuple[int, int, int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]), int(value[2]), int(value[3]))


INPUT = Geometry(1, 1, 0)
UNKNOWN = Geometry(None, None, None)


def box(
    geometry: Geometry, position: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The input pixels unit `position` = (y, x) sees, as (left, top, right, bottom),
    right and bottom exclusive, clipped to the image of `size` = (H, W).

    The whole image for a non-spatial output (position None, or a geometry that sees the
    whole image, like a global pool's [C, 1, 1]); None where the geometry is unknown. Rows and columns each follow their own axis where they differ; the
    box is clipped to the geometry's bounds where it has them.
    """
    height, width = size
    if position is None or geometry.whole_image:
        return (0, 0, width, height)
    axes = geometry.axes
    if axes is None:
        return None
    (top, bottom), (left, right) = axes[0].window(position[0]), axes[1].window(position[1])
    first_x, first_y, last_x, last_y = geometry.bounds or (0, 0, width, height)
    clipped = (
        max(left, first_x, 0),
        max(top, first_y, 0),
        min(right, last_x, width),
        min(bottom, last_y, height),
    )
    # A unit whose window lies wholly in the padding sees no pixel at all.
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else None
