// service/static/lib/methods.mjs: the catalogue's word on each explanation method, read as far
// as it goes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { methodLabel, methodNotes } from "../../../../service/static/lib/methods.mjs";

const TODAY = { methods: ["occlusion", "rise"], default_method: "occlusion", default_layer: "layer4.1", unavailable: null };

test("a catalogue that measured nothing: no notes, no reason, plain labels", () => {
  assert.deepEqual(methodNotes(TODAY), { notes: {}, reason: null });
  assert.deepEqual(methodNotes(undefined), { notes: {}, reason: null });
  assert.equal(methodLabel("occlusion", undefined, true), "occlusion (default)");
  assert.equal(methodLabel("rise", undefined), "rise");
});

test("measurements give each method its share; under 80% is not recommended unless the catalogue says", () => {
  const block = { ...TODAY, measured: [
    { method: "occlusion", images: 30, beats_random: 29, share: 29 / 30, median_seconds: 0.8 },
    { method: "rise", images: 30, beats_random: 18 },
    { method: "score-cam", images: 10, share: 0.5, recommended: true },
  ], reason: "occlusion beats random on 97% of 30 images in 0.8 s" };
  const { notes, reason } = methodNotes(block);
  assert.equal(reason, "occlusion beats random on 97% of 30 images in 0.8 s");
  assert.deepEqual(notes.occlusion, { share: 29 / 30, images: 30, seconds: 0.8, recommended: true, why: null });
  assert.deepEqual(notes.rise, { share: 0.6, images: 30, seconds: null, recommended: false, why: null });
  assert.equal(notes["score-cam"].recommended, true);
  assert.equal(methodLabel("occlusion", notes.occlusion, true), "occlusion (default) · beats random on 97%");
  assert.equal(methodLabel("rise", notes.rise), "rise · beats random on 60% · not recommended");
});

test("a list of methods not recommended, by name or with the measured share, nested records too", () => {
  const { notes, reason } = methodNotes({ ...TODAY, not_recommended: ["eigen-cam", { method: "rise", share: 0.4 }, 7],
                                          survey: { methods: [{ method: "grad-cam", share: 0.95 }], reason: "why" } });
  assert.deepEqual(notes["eigen-cam"], { images: null, seconds: null, share: null, recommended: false, why: null });
  assert.equal(notes.rise.share, 0.4);
  assert.equal(notes.rise.recommended, false);
  assert.equal(notes["grad-cam"].recommended, true);
  assert.equal(reason, "why");
  assert.equal(methodLabel("eigen-cam", notes["eigen-cam"]), "eigen-cam · not recommended");
});

test("the service's catalogue (issue 21): the measured record, the default's reason, the methods not recommended", () => {
  const measured = { images: 30, seconds: 12.5, cpus: 2, load_average: 0.4, default_method: "hires-cam", reason: "short",
    methods: [{ method: "grad-cam", layer: "features.2", images: 30, beats_random: 12, share: 0.4, passes: 59, median_seconds: 0.05 },
              { method: "hires-cam", layer: "features.2", images: 30, beats_random: 30, share: 1, passes: 59, median_seconds: 0.05 },
              { method: "eigen-cam", layer: "features.2", images: 30, beats_random: 25, share: 25 / 30, passes: 59 }] };
  const block = { ...TODAY, default_method: "hires-cam", default_reason: "measured at export on 30 held-out images: short",
    not_recommended: [{ method: "grad-cam", beats_random_share: 0.4, images: 30, why: "its map beat a random map on 12 of 30" }],
    measured };
  const { notes, reason } = methodNotes(block);
  assert.equal(reason, "measured at export on 30 held-out images: short");
  assert.deepEqual(notes["grad-cam"], { share: 0.4, images: 30, seconds: 0.05, recommended: false, why: "its map beat a random map on 12 of 30" });
  assert.equal(notes["hires-cam"].recommended, true);
  assert.equal(notes["eigen-cam"].recommended, true);  // 83%
  assert.equal(methodLabel("grad-cam", notes["grad-cam"]), "grad-cam · beats random on 40% · not recommended");
  // an older server: the same block without them, or with them empty
  assert.deepEqual(methodNotes({ ...TODAY, default_reason: null, not_recommended: [], measured: null }), { notes: {}, reason: null });
});
