// service/static/lib/format.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { fmt, pct } from "../../../../service/static/lib/format.mjs";

test("values: three significant digits below 100, whole numbers from 100", () => {
  assert.deepEqual([0, 0.123456, -1.5, 27.14, 99.96, 100.4, -2048.7].map(fmt), ["0", "0.123", "-1.50", "27.1", "100", "100", "-2049"]);
});

test("probabilities: one decimal, none at the ends", () => {
  assert.deepEqual([1, 0.9951, 0.952, 0.028, 0.001, 0.0009, 0].map(pct), ["100%", "100%", "95.2%", "2.8%", "0.1%", "0%", "0%"]);
});
