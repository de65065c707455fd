"""graph_geometry on small graphs built with onnx.helper, one per family of ops: every
field worked out by hand here, and every unit's box checked against the pixels that
really change it (geometry_check: one bright pixel at a time, through onnxruntime)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.geometry import Axis, Geometry, box
from model_export.graph_geometry import GATED, MIRRORED, NORMALISED, RESAMPLED, Field, receptive_fields
from tests.support.geometry_check import assert_covers, assert_exact, observe


class Net:
    """A graph built op by op: positive conv weights (each output the mean of its
    inputs, give or take), zero biases, a dynamic batch."""

    def __init__(self, channels: int = 2, size: tuple[int, int] = (12, 12), opset: int = 18) -> None:
        self.size, self.opset, self.channels = size, opset, {"input": channels}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)

    def name(self, op: str) -> str:
        return f"{op.lower()}{len(self.nodes)}"

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def conv(self, x: str, out: int, kernel: tuple[int, int] = (3, 3), group: int = 1, **attrs: Any) -> str:
        fan_in = self.channels[x] // group * kernel[0] * kernel[1]
        weight = (0.5 + self.rng.random((out, self.channels[x] // group, *kernel))) / fan_in
        return self.op("Conv", x, self.const(weight, np.float32), channels=out, group=group, **attrs)

    def op(self, op: str, *inputs: str, channels: int | None = None, outputs: int = 1, **attrs: Any) -> Any:
        names = [f"{self.name(op)}_{i}" if outputs > 1 else self.name(op) for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, **attrs))
        for name in names:
            self.channels[name] = channels if channels is not None else self.channels.get(inputs[0], 0)
        return names if outputs > 1 else names[0]

    def model(self, *outputs: str) -> onnx.ModelProto:
        image = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", self.channels["input"], *self.size])
        outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
        graph = helper.make_graph(self.nodes, "net", [image], outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=10)
        return model

    def fields(self, *outputs: str) -> tuple[onnx.ModelProto, dict[str, Field]]:
        model = self.model(*outputs)
        return model, receptive_fields(model, "input")

    def exact(self, *outputs: str) -> dict[str, Field]:
        """The fields, each map's boxes checked against the pixels that change its units."""
        model, fields = self.fields(*outputs)
        assert assert_exact(observe(model, fields, self.size, self.channels["input"])) > 0
        return fields


def square(field: Field) -> tuple[int | None, int | None, int | None]:
    g = field.geometry
    return g.receptive_field, g.stride, g.offset


def per_axis(field: Field) -> tuple[Axis, Axis] | None:
    return field.geometry.axes


def test_windows_pads_auto_pad_and_ceil_mode() -> None:
    net = Net(size=(13, 13))
    a = net.op("Relu", net.conv("input", 3, pads=[1, 1, 1, 1]))  # rf 3, offset -1
    b = net.op("Relu", net.conv(a, 3, auto_pad="SAME_UPPER", strides=[2, 2]))  # 13 -> 7: 2 padded rows, 1 before
    c = net.op("MaxPool", b, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)  # 7 -> 4
    d = net.op("AveragePool", c, kernel_shape=[2, 2], auto_pad="SAME_LOWER")  # 1 padded row, before
    e = net.op("Relu", net.conv(a, 3, auto_pad="SAME_UPPER", strides=[2, 2], kernel=(4, 4)))  # 2 padded: 1 before
    fields = net.exact(d, e)
    assert square(fields[a]) == (3, 1, -1)
    assert square(fields[b]) == (5, 2, -2)
    assert square(fields[c]) == (9, 4, -4)
    assert square(fields[d]) == (13, 4, -8)
    assert square(fields[e]) == (6, 2, -2)


def test_an_op_that_reads_past_the_last_unit_sees_only_what_that_unit_saw() -> None:
    """squeezenet's pattern: an unpadded 3x3/2 conv on 12 columns reads 0..10, never 11;
    a ceil_mode pool after it reaches past its last unit into padding."""
    net = Net(size=(12, 12))
    a = net.op("Relu", net.conv("input", 2, strides=[2, 2]))  # 5 units: columns 0..10
    b = net.op("MaxPool", a, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)  # 2 units, the last reads 4..6
    fields = net.exact(b)
    assert fields[a].geometry.bounds is None  # 0..10 of 12, but each unit's window says so itself
    assert fields[b].geometry.bounds == (0, 0, 11, 11)
    assert box(fields[b].geometry, (1, 1), (12, 12)) == (4, 4, 11, 11)  # the window alone: 4..14


def test_rectangular_fields_rows_and_columns_apart() -> None:
    net = Net(size=(10, 24))
    a = net.op("Relu", net.conv("input", 2, kernel=(3, 1), pads=[1, 0, 1, 0]))
    b = net.op("Relu", net.conv(a, 2, kernel=(1, 5), strides=[1, 2], pads=[0, 2, 0, 2]))
    c = net.op("MaxPool", b, kernel_shape=[2, 2], strides=[2, 1])
    d = net.op("Relu", net.conv(net.conv(a, 2, kernel=(3, 3), strides=[1, 1], pads=[1, 1, 1, 1]), 2, kernel=(1, 3)))
    fields = net.exact(c, d)
    assert per_axis(fields[a]) == (Axis(3, 1, -1), Axis(1, 1, 0))
    assert per_axis(fields[b]) == (Axis(3, 1, -1), Axis(5, 2, -2))
    assert per_axis(fields[c]) == (Axis(4, 2, -1), Axis(7, 2, -2))
    # Strides differ: no square window holds the field; the larger field, no stride.
    assert square(fields[b]) == (5, None, None) and fields[b].geometry.stride_hw == (1, 2)
    # Strides agree: the square fields hold the smallest square window around it.
    assert per_axis(fields[d]) == (Axis(5, 1, -2), Axis(5, 1, -1))
    assert square(fields[d]) == (6, 1, -2)


def test_depthwise_grouped_and_dilated_convs() -> None:
    net = Net(channels=4)
    a = net.op("Relu", net.conv("input", 4, pads=[1, 1, 1, 1]))
    b = net.op("Relu", net.conv(a, 4, group=4, dilations=[2, 2], pads=[2, 2, 2, 2]))  # depthwise, dilated
    c = net.conv(b, 6, kernel=(1, 1), group=2)
    d = net.op("MaxPool", c, kernel_shape=[3, 3], dilations=[2, 2], strides=[2, 2])
    model, fields = net.fields(d)
    assert [square(fields[x]) for x in (a, b, c, d)] == [(3, 1, -1), (7, 1, -3), (7, 1, -3), (11, 2, -3)]
    # A dilated kernel's field has holes: near the border the pixels a unit reads can
    # span less than its clipped window; everywhere else the box is exact.
    assert assert_covers(observe(model, fields, net.size, 4)) > 100


def test_residual_merges_take_the_union_of_the_paths() -> None:
    net = Net(size=(16, 16))
    stem = net.op("Relu", net.conv("input", 4, pads=[1, 1, 1, 1]))
    main = net.op("Relu", net.conv(stem, 4, strides=[2, 2], pads=[1, 1, 1, 1]))
    main = net.conv(main, 4, pads=[1, 1, 1, 1])
    shortcut = net.conv(stem, 4, kernel=(1, 1), strides=[2, 2])  # a 1x1/2 projection: a field with holes
    out = net.op("Relu", net.op("Add", main, shortcut))
    fields = net.exact(out)
    assert square(fields[shortcut]) == (3, 2, -1)
    assert square(fields[main]) == (9, 2, -4)
    assert square(fields[out]) == (9, 2, -4)  # the union: the shortcut's window lies inside the main path's


def test_a_squeeze_excite_gate_keeps_the_main_path_field_and_says_so() -> None:
    net = Net(channels=3, size=(14, 14))
    x = net.op("Relu", net.conv("input", 4, strides=[2, 2], pads=[1, 1, 1, 1]))
    dw = net.op("Relu", net.conv(x, 4, group=4, pads=[1, 1, 1, 1]))
    pooled = net.op("GlobalAveragePool", dw)
    gate = net.op("HardSigmoid", net.conv(net.op("Relu", net.conv(pooled, 2, kernel=(1, 1))), 4, kernel=(1, 1)))
    scaled = net.op("Mul", dw, gate)
    out = net.op("Add", net.conv(scaled, 4, kernel=(1, 1)), x)
    after = net.op("Relu", net.conv(out, 4, pads=[1, 1, 1, 1]))
    fields = net.exact(after)
    assert square(fields[pooled]) == (14, None, None) and "GlobalAveragePool mixes every position" in str(
        fields[pooled].note
    )
    assert square(fields[gate]) == (14, None, None)
    assert square(fields[scaled]) == square(fields[dw]) == (7, 2, -3)
    assert fields[dw].note is None and fields[scaled].note == fields[out].note == fields[after].note == GATED


def test_concatenating_branches_like_inception() -> None:
    net = Net(channels=3)
    x = net.op("Relu", net.conv("input", 4, pads=[1, 1, 1, 1]))
    one = net.conv(x, 2, kernel=(1, 1))
    three = net.conv(net.conv(x, 2, kernel=(1, 1)), 2, pads=[1, 1, 1, 1])
    five = net.conv(x, 2, kernel=(5, 5), pads=[2, 2, 2, 2])
    pool = net.conv(net.op("MaxPool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 2, kernel=(1, 1))
    cat = net.op("Concat", one, three, five, pool, axis=1, channels=8)
    fields = net.exact(cat)
    assert [square(fields[v]) for v in (one, three, five, pool, cat)] == [
        (3, 1, -1), (5, 1, -2), (7, 1, -3), (5, 1, -2), (7, 1, -3)
    ]  # fmt: skip


def test_pad_slice_and_split_shift_the_grid() -> None:
    net = Net(size=(12, 14))
    padded = net.op("Pad", "input", net.const([0, 0, 2, 1, 0, 0, 0, 3]))  # 2 rows before, 1 column before
    a = net.op("Relu", net.conv(padded, 4))
    cropped = net.op("Slice", a, net.const([1, 2]), net.const([-1, 13]), net.const([2, 3]), net.const([1, 2]))
    left, right = net.op("Split", cropped, axis=1, outputs=2, num_outputs=2)
    half = net.op("Split", cropped, net.const([2, 4]), axis=3, outputs=2)[1]  # columns 2.. of the crop (6)
    fields = net.exact(left, right, half)
    assert per_axis(fields[padded]) == (Axis(1, 1, -2), Axis(1, 1, -1))
    assert per_axis(fields[a]) == (Axis(3, 1, -2), Axis(3, 1, -1))
    assert per_axis(fields[cropped]) == (Axis(3, 1, -1), Axis(3, 2, 1))  # rows from 1; every 2nd column from 2
    assert fields[left].geometry == fields[right].geometry == fields[cropped].geometry
    assert per_axis(fields[half]) == (Axis(3, 1, -1), Axis(3, 2, 5))


def test_reflect_padding_is_the_nominal_window_and_noted() -> None:
    net = Net(size=(12, 12))
    padded = net.op("Pad", "input", net.const([0, 0, 2, 2, 0, 0, 2, 2]), mode="reflect")
    a = net.op("Relu", net.conv(padded, 2, kernel=(3, 3)))
    model, fields = net.fields(a)
    assert square(fields[a]) == (3, 1, -2) and fields[a].note == MIRRORED
    interior = [b for b in observe(model, fields, net.size, 2) if b.name == a][0]
    assert (interior.predicted == interior.observed)[interior.inside].all()
    assert not (interior.predicted == interior.observed).all()  # the border units see mirrored pixels


def test_resampling_covers_each_units_field_within_one_stride() -> None:
    net = Net(size=(16, 16))
    down = net.op("Relu", net.conv("input", 2, strides=[2, 2], pads=[1, 1, 1, 1]))  # rf 3, stride 2
    nearest = net.op("Resize", down, "", net.const([1, 1, 2, 2], np.float32), mode="nearest")
    linear = net.op("Resize", down, "", "", net.const([16, 4]), axes=[2, 3], mode="linear")
    transposed = net.op(
        "ConvTranspose", down, net.const(np.full((2, 2, 2, 2), 0.25), np.float32), strides=[2, 2], channels=2
    )
    shuffled = net.op("DepthToSpace", net.conv(down, 4, kernel=(1, 1)), blocksize=2, channels=1)
    model, fields = net.fields(nearest, linear, transposed, shuffled)
    assert square(fields[nearest]) == (4, 1, -2) and fields[nearest].note == RESAMPLED
    # Rows doubled (o reads units (o - 1) // 2 .. o // 2 + 1 of 8, clamped), columns halved (o reads 2o, 2o + 1).
    assert per_axis(fields[linear]) == (Axis(6, 1, -3), Axis(5, 4, -1))
    assert square(fields[transposed]) == (4, 1, -2)
    assert square(fields[shuffled]) == (4, 1, -2)
    resampled = [b for b in observe(model, fields, net.size, 2) if b.name != down]
    assert assert_covers(resampled, slack=2) > 0  # one stride of the map they resample


def test_layout_ops_move_the_rows_and_columns() -> None:
    """An NHWC detour with a Linear over the channels (ConvNeXt as torch.onnx writes it),
    a channel shuffle through a 5-D Reshape (ShuffleNet), Unsqueeze/Squeeze."""
    net = Net(channels=4)
    x = net.op("Relu", net.conv("input", 4, pads=[1, 1, 1, 1]))
    nhwc = net.op("Transpose", x, perm=[0, 2, 3, 1])
    weights = net.const(0.5 + net.rng.random((4, 6)), np.float32)  # channels unlike each other: LayerNorm keeps them
    linear = net.op("Add", net.op("MatMul", nhwc, weights), net.const(np.zeros(6), np.float32))
    normed = net.op("LayerNormalization", net.op("Relu", linear), net.const(np.ones(6), np.float32), axis=-1)
    nchw = net.op("Transpose", normed, perm=[0, 3, 1, 2], channels=6)
    grouped = net.op("Reshape", net.op("Relu", nchw), net.const([0, 2, 3, 12, 12]))
    shuffled = net.op("Reshape", net.op("Transpose", grouped, perm=[0, 2, 1, 3, 4]), net.const([0, 6, 12, 12]))
    wide = net.op("Squeeze", net.op("Unsqueeze", shuffled, net.const([1])), net.const([1]))
    out = net.conv(wide, 2, pads=[1, 1, 1, 1])
    fields = net.exact(out)
    assert fields[nhwc].axes == fields[linear].axes == fields[normed].axes == (1, 2)
    assert fields[grouped].axes == (3, 4) and fields[shuffled].axes == fields[wide].axes == (2, 3)
    assert {square(fields[v]) for v in (nhwc, linear, nchw, grouped, shuffled, wide)} == {(3, 1, -1)}
    assert square(fields[out]) == (5, 1, -2)
    assert fields[normed].note is None  # LayerNorm over the channels mixes no positions


def test_values_that_are_no_longer_maps_see_the_whole_image() -> None:
    net = Net(size=(12, 20))
    x = net.op("Relu", net.conv("input", 3, pads=[1, 1, 1, 1]))
    mean = net.op("ReduceMean", x, net.const([2, 3]), keepdims=0)
    flat = net.op("Flatten", x, axis=1)
    logits = net.op("Gemm", flat, net.const(np.ones((720, 5)), np.float32))
    # x.view(x.size(0), -1): the shape comes from the input's shape, not its values
    batch = net.op("Unsqueeze", net.op("Gather", net.op("Shape", x), net.const(0), axis=0), net.const([0]))
    view = net.op("Reshape", x, net.op("Concat", batch, net.const([-1]), axis=0))
    _, fields = net.fields(mean, logits, view)
    whole = Geometry(20, None, None, (12, 20))
    assert fields[mean] == Field(whole, "ReduceMean over the image's rows and columns mixes every position: not a map")
    assert fields[flat] == Field(whole, "Flatten folds the image's rows and columns into one axis: not a map")
    assert fields[logits] == Field(whole, "Gemm mixes every position: not a map")
    assert fields[view].geometry == whole and "folds" in str(fields[view].note)
    shape_values = {n.output[0] for n in net.nodes if n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat")}
    assert not shape_values & set(fields)  # the shape arithmetic is not computed from the image's values


def test_normalisation_over_positions_is_noted() -> None:
    net = Net()
    x = net.op("Relu", net.conv("input", 2, pads=[1, 1, 1, 1]))
    normed = net.op("InstanceNormalization", x, net.const([1, 1], np.float32), net.const([0, 0], np.float32))
    _, fields = net.fields(normed)
    assert square(fields[normed]) == (3, 1, -1) and fields[normed].note == NORMALISED


def test_what_the_walk_does_not_model_is_null_and_named() -> None:
    net = Net(size=(12, 12))
    strided = net.conv("input", 2, kernel=(1, 1), strides=[2, 2])  # 6 units, 2 px apart
    valid = net.conv("input", 2, kernel=(7, 7))  # 6 units, 1 px apart
    mixed = net.op("Add", strided, valid)
    tall = net.op("Concat", strided, strided, axis=2)
    grid = net.const(np.zeros((1, 6, 6, 2)), np.float32)
    sampled = net.op("GridSample", strided, grid)
    after = net.op("Relu", sampled)
    custom = net.op("Relu", net.op("Conv", strided, domain="com.example"))  # not ONNX's Conv
    # A branch that reads the image without the If listing it as an input.
    branch = helper.make_graph([helper.make_node("Relu", [strided], ["branch_out"])], "branch", [],
                               [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)])  # fmt: skip
    chosen = net.op("If", net.const(True, np.bool_), then_branch=branch, else_branch=branch)
    model = net.model(mixed, tall, after, custom, chosen)
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    fields = receptive_fields(model, "input")
    assert fields[mixed] == Field(Geometry(None, None, None), "Add merges grids of 2 and 1 px between rows: no one stride")
    assert fields[tall].note == "Concat along the image's rows is not modelled"
    assert square(fields[sampled]) == square(fields[after]) == (None, None, None)
    assert fields[after].note == fields[sampled].note == "GridSample is not modelled here: the field is unknown"
    assert fields[custom].note == "com.example.Conv is not modelled here: the field is unknown"
    assert fields[chosen] == Field(Geometry(None, None, None), "If with a subgraph is not modelled here")


def test_a_dynamic_input_size_is_given_by_the_caller() -> None:
    net = Net(size=(12, 12))
    a = net.op("Relu", net.conv("input", 2, auto_pad="SAME_UPPER", strides=[2, 2]))
    model = net.model(a)
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    unknown = receptive_fields(model, "input")
    assert unknown[a].geometry == Geometry(None, None, None) and "unknown size" in str(unknown[a].note)
    assert square(receptive_fields(model, "input", size=(13, 13))[a]) == (3, 2, -1)  # 2 padded rows: 1 before
    assert square(receptive_fields(model, "input", size=(12, 12))[a]) == (3, 2, 0)


@pytest.mark.parametrize("opset", [11, 13])
def test_older_opsets_give_axes_and_pads_as_attributes_or_inputs(opset: int) -> None:
    net = Net(size=(10, 10), opset=opset)
    x = net.op("Relu", net.conv("input", 2, pads=[1, 1, 1, 1]))
    squeezed = net.op("Unsqueeze", x, axes=[1]) if opset < 13 else net.op("Unsqueeze", x, net.const([1]))
    back = net.op("Squeeze", squeezed, axes=[1]) if opset < 13 else net.op("Squeeze", squeezed, net.const([1]))
    mean = net.op("ReduceMean", back, axes=[1], keepdims=1)
    fields = net.exact(mean)
    assert fields[squeezed].axes == (3, 4) and fields[back].axes == (2, 3)
    assert square(fields[mean]) == (3, 1, -1)  # the mean over channels keeps the map


def test_channel_shuffles_whose_shapes_are_computed_from_shape_at_opset_11() -> None:
    """ShuffleNet as the TorchScript exporter writes it at opset 11: each shuffle's target
    shape is Shape -> Gather -> Unsqueeze (axes as an attribute) -> Concat, from the shape
    the previous shuffle produced; five in a row need five rounds of folding."""
    net = Net(channels=4, size=(10, 10), opset=11)
    x = net.op("Relu", net.conv("input", 4, pads=[1, 1, 1, 1]))
    shuffles = []
    for _ in range(5):
        shape = net.op("Shape", x)
        dims = [net.op("Unsqueeze", net.op("Gather", shape, net.const(i), axis=0), axes=[0]) for i in range(4)]
        split = net.op("Concat", dims[0], net.const([2]), net.const([2]), dims[2], dims[3], axis=0)
        grouped = net.op("Transpose", net.op("Reshape", x, split), perm=[0, 2, 1, 3, 4])
        x = net.op("Reshape", grouped, net.op("Concat", dims[0], net.const([-1]), dims[2], dims[3], axis=0))
        net.channels[x] = 4
        shuffles.append(x)
    fields = net.exact(net.conv(x, 2, pads=[1, 1, 1, 1]))
    assert [square(fields[v]) for v in shuffles] == [(3, 1, -1)] * 5


def test_the_brute_force_notices_a_box_one_pixel_off() -> None:
    net = Net()
    a = net.op("Relu", net.conv("input", 2, pads=[1, 1, 1, 1]))
    model, fields = net.fields(a)
    assert assert_exact(observe(model, fields, net.size, 2)) == 2 * 144  # the input and `a`
    shifted = {a: Field(Geometry(3, 1, 0), None, (2, 3))}
    with pytest.raises(AssertionError, match=r"unit \(0, 0\): geometry gives \(0, 0, 3, 3\), .* span \(0, 0, 2, 2\)"):
        assert_exact(observe(model, shifted, net.size, 2))


def test_a_wide_image_through_an_nhwc_gate_as_tf2onnx_writes_one() -> None:
    """The issue's second model in small: a 1:4 image, SAME padding, hard-swish spelled out,
    a squeeze-excite gate computed and applied in NHWC, strides unlike across rows and columns."""
    net = Net(channels=3, size=(12, 48))
    x = net.conv("input", 4, auto_pad="SAME_UPPER", strides=[2, 2])
    three, six = net.const(3.0, np.float32), net.const(6.0, np.float32)
    relu6 = net.op("Clip", net.op("Add", x, three), net.const(0.0, np.float32), six)
    swish = net.op("Div", net.op("Mul", x, relu6), six)
    nhwc = net.op("Transpose", swish, perm=[0, 2, 3, 1])
    pooled = net.op("ReduceMean", nhwc, net.const([1, 2]), keepdims=1)
    squeezed = net.op("Reshape", pooled, net.const([-1, 4]))
    hidden = net.op("Relu", net.op("MatMul", squeezed, net.const(0.5 + net.rng.random((4, 2)), np.float32)))
    gate = net.op("HardSigmoid", net.op("MatMul", hidden, net.const(0.5 + net.rng.random((2, 4)), np.float32)))
    gated = net.op("Mul", nhwc, net.op("Reshape", gate, net.const([-1, 1, 1, 4])))
    back = net.op("Transpose", gated, perm=[0, 3, 1, 2], channels=4)
    out = net.op("Relu", net.conv(back, 4, kernel=(1, 3), strides=[1, 2], pads=[0, 1, 0, 1]))
    fields = net.exact(out)
    assert square(fields[swish]) == (3, 2, 0)  # SAME_UPPER on 12 x 48, stride 2: the padded row goes after
    assert fields[gated].axes == (1, 2) and fields[back].axes == (2, 3)
    assert per_axis(fields[out]) == (Axis(3, 2, 0), Axis(7, 4, -2))
    assert fields[out].geometry.receptive_field_hw == (3, 7) and fields[out].geometry.stride is None
    assert fields[swish].note is None and fields[gated].note == fields[out].note == GATED
    assert fields[squeezed].geometry == Geometry(48, None, None, (12, 48))


def test_an_nhwc_input_names_its_axes() -> None:
    net = Net(channels=3, size=(10, 16))
    nchw = net.op("Transpose", "input", perm=[0, 3, 1, 2])
    a = net.op("Relu", net.conv(nchw, 2, kernel=(3, 5), strides=[1, 2]))
    flat = net.op("Flatten", a)
    model = net.model(flat)
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 10, 16, 3]))
    fields = receptive_fields(model, "input", axes=(1, 2))
    assert fields["input"].axes == (1, 2) and fields[nchw].axes == (2, 3)
    assert per_axis(fields[a]) == (Axis(3, 1, 0), Axis(5, 2, 0))
    assert fields[flat].geometry == Geometry(16, None, None, (10, 16))  # the whole 10 x 16 image
