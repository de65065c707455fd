// service/static/lib/quantization.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

import { agreementFigures, errorBars, int8Caption, keptFloatNote, severity, speedText, sqnr, twinOf } from "../../../../service/static/lib/quantization.mjs";

const models = [
  { name: "m", default_version: 3, versions: [
    { version: 4, state: "failed", precision: null, quantized_from: null },
    { version: 3, state: "ready", precision: "int8", quantized_from: 1 },
    { version: 2, state: "ready", precision: "int8", quantized_from: 1 },
    { version: 1, state: "ready", precision: "float32", quantized_from: null },
  ] },
  { name: "solo", default_version: 1, versions: [{ version: 1, state: "ready", precision: "float32", quantized_from: null }] },
  { name: "orphan", default_version: 2, versions: [
    { version: 2, state: "ready", precision: "int8", quantized_from: 1 },
    { version: 1, state: "unloaded", precision: null, quantized_from: null },
  ] },
];

test("an int8 version's twin is its float version; a float version's, its newest int8 version", () => {
  assert.deepEqual(twinOf(models, "m", 2), { version: 1, precision: "float32" });
  assert.deepEqual(twinOf(models, "m", 1), { version: 3, precision: "int8" });
});

test("no twin without a ready version at the other precision, or for a version not ready", () => {
  assert.equal(twinOf(models, "solo", 1), null);
  assert.equal(twinOf(models, "orphan", 2), null);  // its float version is unloaded
  assert.equal(twinOf(models, "m", 4), null);
  assert.equal(twinOf(models, "nothing", 1), null);
});

test("severity in words, by SQNR", () => {
  assert.deepEqual([45, 30, 29.9, 20, 12, null].map(severity), ["close", "close", "noticeable", "noticeable", "large", "identical"]);
});

test("bars grow as the SQNR falls, on one scale for every model; the last row is the class output", () => {
  const bars = errorBars([
    { name: "a", sqnr_db: 40, relative_error: 0.01, worst_channel: 3, worst_channel_sqnr_db: 20 },
    { name: "b", sqnr_db: 20, relative_error: 0.1, worst_channel: null, worst_channel_sqnr_db: null },
    { name: "c", sqnr_db: 5, relative_error: 0.56, worst_channel: null, worst_channel_sqnr_db: null },
    { name: "d", sqnr_db: null, relative_error: 0, worst_channel: null, worst_channel_sqnr_db: null },
    { name: "logits", sqnr_db: 70, relative_error: 0.0003, worst_channel: null, worst_channel_sqnr_db: null },
  ]);
  assert.deepEqual(bars.map((b) => [b.name, Math.round(b.fraction * 1000) / 1000, b.severity, b.output]),
    [["a", 0.4, "close", false], ["b", 0.8, "noticeable", false], ["c", 1, "large", false],
     ["d", 0, "identical", false], ["logits", 0, "close", true]]);
  assert.equal(bars[0].worstChannel, 3);
  assert.deepEqual(bars.map((b) => b.float), [false, false, false, false, false]);
  const kept = errorBars([{ name: "a", sqnr_db: 40, relative_error: 0.01 }, { name: "logits", sqnr_db: 30,
    relative_error: 0.03 }], ["logits"]);
  assert.deepEqual(kept.map((b) => [b.name, b.float]), [["a", false], ["logits", true]]);
});

test("sqnr: 20 dB for noise of a tenth of the signal's amplitude; null when equal", () => {
  const a = Float32Array.from([1, -1, 1, -1]);
  assert.ok(Math.abs(sqnr(a, a.map((v) => v * 1.1)) - 20) < 1e-4);
  assert.equal(sqnr(a, a), null);
  assert.equal(sqnr([0, 0], [0, 1]), -Infinity);
  assert.throws(() => sqnr([1], [1, 2]), /1 values against 2/);
});

test("the export's timing in words, at its largest batch", () => {
  assert.equal(speedText([{ batch: 1, float_seconds: 0.02, int8_seconds: 0.009 }, { batch: 16, float_seconds: 0.25, int8_seconds: 0.0625 }]),
    "4.0× faster than float at batch 16");
  assert.equal(speedText([{ batch: 16, float_seconds: 0.001, int8_seconds: 0.002 }]), "0.5× (slower) than float at batch 16");
  assert.equal(speedText([]), null);
});

test("the agreement never rounds a disagreement away, and counts the images", () => {
  assert.deepEqual(agreementFigures(0.997, 1000), { share: "99.7%", same: 997 });
  assert.deepEqual(agreementFigures(0.997312, 744), { share: "99.7%", same: 742 });
  assert.deepEqual(agreementFigures(0.9995, 2000), { share: "99.9%", same: 1999 });
  assert.deepEqual(agreementFigures(1, 240), { share: "100%", same: 240 });
  assert.deepEqual(agreementFigures(0.976562, 256), { share: "97.6%", same: 250 });
});

test("the int8 map's caption and note say where the export kept the layer float32", () => {
  assert.equal(int8Caption(2, "features.3"), "int8 · v2");
  assert.equal(int8Caption(2, "features.3", ["features.7"]), "int8 · v2");
  assert.equal(int8Caption(5, "features.7", ["features.7"]), "int8 · v5 (kept float32)");
  assert.equal(keptFloatNote("features.3", ["features.7"]), "");
  assert.match(keptFloatNote("features.7", ["features.7"]), /computes this layer in float32 .* through the int8 layers/);
});
