"""Where a feature-map unit looks in the input: receptive field, stride, offset.

Shared by both ways into an artifact (the PyTorch trace in layers.py, the ONNX graph
walk in onnx_import.py) and by the channel view, which turns a unit's position into
a box of input pixels. Torch-free.

Through one sliding window (kernel k, stride s, dilation d, padding p before the first
row), unit i of the output reads units i*s - p .. i*s - p + (k-1)*d of its input, so

    rf'     = rf + (k - 1) * d * jump
    offset' = offset - p * jump
    jump'   = jump * s

starting from the input itself (rf 1, jump 1, offset 0).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Unit (y, x) of a map sees input rows offset + y * stride .. offset + y * stride
    + receptive_field - 1, and the same columns; offset < 0 where the first unit's
    window starts in the padding. None where it is unknown (a graph not modelled here)
    or, for stride and offset, where the output is not spatial (it sees the whole
    input)."""

    receptive_field: int | None
    stride: int | None
    offset: int | None

    @property
    def spatial(self) -> bool:
        return self.receptive_field is not None and self.stride is not None

    def window(self, kernel: int, stride: int, dilation: int, padding: int | None) -> Geometry:
        """After one sliding window; a padding of None (rows and columns padded
        differently) leaves the offset unknown, not wrong."""
        if self.receptive_field is None or self.stride is None:
            return UNKNOWN
        jump = self.stride
        offset = self.offset - padding * jump if self.offset is not None and padding is not None else None
        return Geometry(self.receptive_field + (kernel - 1) * dilation * jump, jump * stride, offset)

    def padded(self, padding: int | None) -> Geometry:
        """After explicit padding (an ONNX Pad): the grid shifts, the field does not."""
        if self.stride is None:
            return UNKNOWN
        offset = self.offset - padding * self.stride if self.offset is not None and padding is not None else None
        return Geometry(self.receptive_field, self.stride, offset)


INPUT = Geometry(1, 1, 0)
UNKNOWN = Geometry(None, None, None)


def box(
    geometry: Geometry, position: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The input pixels unit `position` = (y, x) sees, as (left, top, right, bottom),
    right and bottom exclusive, clipped to the image of `size` = (H, W).

    The whole image for a non-spatial output (position None); None where the geometry
    is unknown.
    """
    height, width = size
    if position is None:
        return (0, 0, width, height)
    rf, stride, offset = geometry.receptive_field, geometry.stride, geometry.offset
    if rf is None or stride is None or offset is None:
        return None
    y, x = position
    top, left = offset + y * stride, offset + x * stride
    clipped = (max(left, 0), max(top, 0), min(left + rf, width), min(top + rf, height))
    # A unit whose window lies wholly in the padding sees no pixel at all.
    return clipped if clipped[2] > clipped[0] and clipped[3] > clipped[1] else None
