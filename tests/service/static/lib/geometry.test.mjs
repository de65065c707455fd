// service/static/lib/geometry.mjs: layer geometry from the metadata, square and rectangular.
import assert from "node:assert/strict";
import { test } from "node:test";

import { fieldAxes, geometryText, receptiveBox, shortGeometryText } from "../../../../service/static/lib/geometry.mjs";

const square = { output_shape: [-1, 128, 8, 8], receptive_field: 99, stride: 8, receptive_field_offset: -45 };
const oblong = { output_shape: [-1, 16, 8, 4], receptive_field: 9, stride: 4, receptive_field_offset: -2,
                 receptive_field_hw: [9, 17], stride_hw: [4, 8], receptive_field_offset_hw: [-2, -6] };
const pooled = { output_shape: [-1, 512, 1, 1], receptive_field: 64, stride: null, receptive_field_offset: null };
const units = { output_shape: [-1, 10] };

test("the long and the short description, rows x columns where they differ", () => {
  assert.equal(geometryText(square), "128 × 8 × 8 · receptive field 99×99 px · stride 8");
  assert.equal(shortGeometryText(square), "128×8×8 · field 99 px · stride 8");
  assert.equal(geometryText(oblong), "16 × 8 × 4 · receptive field 9×17 px · stride 4×8");
  assert.equal(shortGeometryText(oblong), "16×8×4 · field 9×17 px · stride 4×8");
  assert.equal(shortGeometryText(pooled), "512×1×1 · field 64 px");
  assert.equal(shortGeometryText(units), "10 units");
});

test("a unit's box: clipped to the input, per axis for oblong fields, the whole image for a global pool", () => {
  assert.deepEqual(fieldAxes(oblong), [{ rf: 9, stride: 4, offset: -2 }, { rf: 17, stride: 8, offset: -6 }]);
  assert.deepEqual(receptiveBox(square, 0, 0, [64, 64]), { left: 0, top: 0, right: 54, bottom: 54 });
  assert.deepEqual(receptiveBox(oblong, 1, 2, [32, 32]), { left: 10, top: 2, right: 27, bottom: 11 });
  assert.deepEqual(receptiveBox(pooled, 0, 0, [64, 64]), { left: 0, top: 0, right: 64, bottom: 64 });
  assert.equal(receptiveBox(units, 0, 0, [64, 64]), null);
  const bounded = { ...square, receptive_field_bounds: [4, 4, 60, 60] };
  assert.deepEqual(receptiveBox(bounded, 0, 0, [64, 64]), { left: 4, top: 4, right: 54, bottom: 54 });
});
