// service/static/lib/maps.mjs and geometry.mjs: feature maps as the predict route sends them,
// and a layer's geometry from the metadata.
import assert from "node:assert/strict";
import { test } from "node:test";

import { dims, fieldAxes, geometryText, receptiveBox, spatial } from "../../../../service/static/lib/geometry.mjs";
import { channelOrder, channelRange, featureMap, featureMaps, firing, layerRange, pageOf, strongestUnit }
  from "../../../../service/static/lib/maps.mjs";

// np.save(buf, np.array([[[0, 1, 2], [3, 4, 5]], [[-1, -1, -1], [-1, -2, -0.5]]], dtype=np.float16))
const MAPS = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAA8AEAAQgBEAEUAvAC8ALwAvADAALg=";
const CONV = { name: "features.1", output_shape: [1, 2, 2, 3], receptive_field: 5, stride: 2, receptive_field_offset: -2 };
const DENSE = { name: "classifier.1", output_shape: [1, 4] };

test("the answer's feature maps, per channel with its range", () => {
  const maps = featureMaps({ "features.1": { data: MAPS } }, [DENSE, CONV]);
  const map = maps["features.1"];
  assert.deepEqual([map.c, map.h, map.w], [2, 2, 3]);
  assert.deepEqual(Array.from(map.data), [0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -2, -0.5]);
  assert.deepEqual(Array.from(map.min), [0, -2]);
  assert.deepEqual(Array.from(map.max), [5, -0.5]);
  assert.deepEqual(layerRange(map), [-2, 5]);
  assert.deepEqual(channelRange(map, 1, false), [-2, -0.5]);
  assert.deepEqual(channelRange(map, 1, true), [-2, 5]);
  assert.equal(firing(map), 1);
  assert.throws(() => featureMaps({ conv9: { data: MAPS } }, [CONV, DENSE]),
    { message: "feature maps of conv9, a layer the model does not list (features.1, classifier.1)" });
  assert.throws(() => featureMap(new Float32Array(5), [2, 2, 3]), { message: "5 values do not make 2 × 2 × 3 maps" });
});

test("channel order: firing ones by activity (ties by index) or by index; silent ones on request", () => {
  const map = featureMap(new Float32Array([3, 0, 7, 3, -1]), [5, 1, 1]);
  assert.deepEqual(channelOrder(map), [2, 0, 3]);
  assert.deepEqual(channelOrder(map, { byActivity: false }), [0, 2, 3]);
  assert.deepEqual(channelOrder(map, { silent: true }), [2, 0, 3, 1, 4]);
  assert.deepEqual(channelOrder(map, { silent: true, byActivity: false }), [0, 1, 2, 3, 4]);
});

test("pages of channels, clamped to the pages there are", () => {
  const channels = [...Array(130).keys()];
  assert.deepEqual(pageOf(channels, 0, 64).shown, channels.slice(0, 64));
  const last = pageOf(channels, 2, 64);
  assert.deepEqual([last.page, last.pages, last.shown], [2, 3, [128, 129]]);
  assert.equal(pageOf(channels, 9, 64).page, 2);
  assert.equal(pageOf(channels, undefined, 64).page, 0);
  assert.deepEqual(pageOf([], 3, 64), { page: 0, pages: 1, shown: [] });
});

test("the strongest unit: row and column of the first maximum", () => {
  assert.deepEqual(strongestUnit(new Float32Array([0, 9, 1, 2, 9, 3]), 3), { y: 0, x: 1 });
  assert.deepEqual(strongestUnit(new Float32Array([0, 1, 1, 2, 3, 8]), 3), { y: 1, x: 2 });
});

test("geometry: maps and vectors, the summary, and the receptive field clipped to the input", () => {
  assert.ok(spatial(CONV) && !spatial(DENSE));
  assert.deepEqual(dims(CONV), [2, 2, 3]);
  assert.deepEqual(dims(DENSE), [4, 1, 1]);
  assert.equal(geometryText(CONV), "2 × 2 × 3 · receptive field 5×5 px · stride 2");
  assert.equal(geometryText(DENSE), "4 units");
  // unit (0, 0) sees -2..2, clipped to 0..3 (exclusive); unit (1, 2): rows 0..5, columns 2..7
  assert.deepEqual(receptiveBox(CONV, 0, 0, [8, 8]), { left: 0, top: 0, right: 3, bottom: 3 });
  assert.deepEqual(receptiveBox(CONV, 1, 2, [8, 6]), { left: 2, top: 0, right: 6, bottom: 5 });
  assert.equal(receptiveBox(DENSE, 0, 0, [8, 8]), null);
  assert.equal(receptiveBox({ ...CONV, receptive_field_offset: undefined }, 0, 0, [8, 8]), null);
});

test("geometry: rows and columns apart where they differ, and boxes clipped to the layer's bounds", () => {
  // rows: rf 3, stride 1, offset -1; columns: rf 7, stride 2, offset -3 (a 3x1 then a 1x5/2 kernel, say)
  const RECT = { ...CONV, receptive_field: 7, stride: null, receptive_field_offset: null,
    receptive_field_hw: [3, 7], stride_hw: [1, 2], receptive_field_offset_hw: [-1, -3] };
  assert.deepEqual(fieldAxes(RECT), [{ rf: 3, stride: 1, offset: -1 }, { rf: 7, stride: 2, offset: -3 }]);
  assert.deepEqual(fieldAxes(CONV), [{ rf: 5, stride: 2, offset: -2 }, { rf: 5, stride: 2, offset: -2 }]);
  assert.equal(geometryText(RECT), "2 × 2 × 3 · receptive field 3×7 px · stride 1×2");
  // unit (2, 1): rows 1..3, columns -1..5 clipped to 0..5
  assert.deepEqual(receptiveBox(RECT, 2, 1, [8, 12]), { left: 0, top: 1, right: 6, bottom: 4 });
  // a layer that never sees the image's last two columns: its boxes stop before them
  const BOUNDED = { ...CONV, receptive_field_bounds: [0, 0, 6, 8] };
  assert.deepEqual(receptiveBox(BOUNDED, 1, 2, [8, 8]), { left: 2, top: 0, right: 6, bottom: 5 });
  assert.equal(receptiveBox({ ...CONV, receptive_field_offset: -9 }, 0, 0, [8, 8]), null);  // only padding
  const POOLED = { ...CONV, output_shape: [1, 2, 1, 1], receptive_field: 8, stride: null, receptive_field_offset: null };
  assert.deepEqual(receptiveBox(POOLED, 0, 0, [8, 6]), { left: 0, top: 0, right: 6, bottom: 8 });  // the whole image
});
