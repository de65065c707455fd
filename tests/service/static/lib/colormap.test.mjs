// service/static/lib/colormap.mjs: tables as the server makes them. The stops and entries
// below are the server's (service/encoding.py COLORMAP_STOPS, COLORMAPS[name][k], printed by
// numpy); tests/service/test_explorer_modules.py compares whole tables against the server.
import assert from "node:assert/strict";
import { test } from "node:test";

import { colormapsFrom, cssGradient, divergingLevel, fraction, level, LEVELS, lut, put } from "../../../../service/static/lib/colormap.mjs";

const STOPS = {
  viridis: [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]],
  coolwarm: [[59, 76, 192], [141, 176, 254], [221, 221, 221], [244, 154, 123], [180, 4, 38]],
  inferno: [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
};
// {k: COLORMAPS[name][k].tolist()}: ends, neighbours of a stop, the middle (127.5 between entries)
const ENTRIES = {
  viridis: { 0: [68, 1, 84], 1: [68, 2, 85], 31: [71, 43, 121], 32: [71, 44, 122], 127: [33, 144, 141], 128: [33, 144, 141], 254: [250, 231, 37], 255: [253, 231, 37] },
  coolwarm: { 0: [59, 76, 192], 1: [60, 78, 193], 31: [99, 125, 222], 32: [100, 126, 223], 127: [220, 221, 221], 128: [221, 220, 220], 254: [181, 6, 39], 255: [180, 4, 38] },
  inferno: { 0: [0, 0, 4], 1: [1, 0, 6], 31: [34, 9, 72], 32: [35, 10, 74], 127: [185, 57, 83], 128: [186, 57, 82], 254: [252, 253, 161], 255: [252, 255, 164] },
};
const entry = (table, k) => Array.from(table.subarray(3 * k, 3 * k + 3));

test("a table's ends are the first and last stops, and its entries the server's", () => {
  for (const [name, stops] of Object.entries(STOPS)) {
    const table = lut(stops);
    assert.equal(table.length, LEVELS * 3);
    assert.deepEqual(entry(table, 0), stops[0], name);
    assert.deepEqual(entry(table, 255), stops.at(-1), name);
    for (const [k, rgb] of Object.entries(ENTRIES[name])) assert.deepEqual(entry(table, Number(k)), rgb, `${name}[${k}]`);
  }
});

test("an entry that falls on a stop is the stop; between stops, the nearest whole value", () => {
  // With 256 entries and 4 stops, entry 85 is at 1/3 and 170 at 2/3.
  const four = lut([[0, 0, 0], [30, 30, 30], [60, 60, 60], [90, 90, 90]]);
  assert.deepEqual(entry(four, 85), [30, 30, 30]);
  assert.deepEqual(entry(four, 170), [60, 60, 60]);
  // two stops 0 -> 255: entry k is k exactly; 0 -> 1: 127 -> 0.498 -> 0, 128 -> 0.502 -> 1
  const ramp = lut([[0, 0, 0], [255, 1, 3]]);
  for (let k = 0; k < 256; k++) assert.equal(ramp[3 * k], k);
  assert.equal(ramp[3 * 127 + 1], 0);
  assert.equal(ramp[3 * 128 + 1], 1);
  assert.deepEqual([ramp[3 * 42 + 2], ramp[3 * 43 + 2], ramp[3 * 127 + 2], ramp[3 * 128 + 2]], [0, 1, 1, 2]);  // 0.494, 0.506, 1.494, 1.506
});

test("a value's entry on a range: ends, clipping, and a flat range", () => {
  assert.equal(level(2, 2, 6), 0);
  assert.equal(level(6, 2, 6), 255);
  assert.equal(level(4, 2, 6), 128);  // 127.5 rounds up
  assert.equal(level(-10, 2, 6), 0);
  assert.equal(level(60, 2, 6), 255);
  assert.equal(level(3, 3, 3), 0);  // hi <= lo: one unit wide from lo
  assert.equal(level(3.5, 3, 3), 128);
  assert.equal(fraction(5, 2, 6), 0.75);
  assert.equal(fraction(7, 2, 6), 1);
});

test("signed weights on the diverging map: -peak, 0 and +peak", () => {
  assert.equal(divergingLevel(-0.5, 0.5), 0);
  assert.equal(divergingLevel(0, 0.5), 128);
  assert.equal(divergingLevel(0.5, 0.5), 255);
  assert.equal(divergingLevel(-0.25, 0.5), 64);  // 63.75
});

test("put writes one RGBA pixel from a table entry", () => {
  const table = lut(STOPS.coolwarm), rgba = new Uint8ClampedArray(8);
  put(rgba, 4, table, 255);
  assert.deepEqual(Array.from(rgba), [0, 0, 0, 0, 180, 4, 38, 255]);
  put(rgba, 0, table, 0, 7);
  assert.deepEqual(Array.from(rgba.subarray(0, 4)), [59, 76, 192, 7]);
});

test("the stops as a CSS gradient", () => {
  assert.equal(cssGradient(STOPS.coolwarm), "linear-gradient(90deg, #3b4cc0, #8db0fe, #dddddd, #f49a7b, #b40426)");
});

test("the catalogue's colormaps block -> a table per role; a role with no stops names the defined maps", () => {
  const block = { feature_maps: "viridis", filters: "coolwarm", saliency: "inferno", saliency_choices: ["inferno", "viridis"], stops: STOPS };
  const maps = colormapsFrom(block);
  assert.deepEqual(Object.keys(maps), ["feature_maps", "filters", "saliency"]);
  assert.equal(maps.filters.name, "coolwarm");
  assert.deepEqual(maps.filters.table, lut(STOPS.coolwarm));
  assert.deepEqual(entry(maps.feature_maps.table, 255), [253, 231, 37]);
  assert.throws(() => colormapsFrom({ ...block, filters: "jet" }),
    { message: "the server's colormaps give no stops for filters (jet); defined: viridis, coolwarm, inferno" });
  assert.throws(() => lut([[1, 2, 3]]), /at least two \[r, g, b\] stops/);
});
