// service/static/lib/layout.mjs: the page's layout maths.
import assert from "node:assert/strict";
import { test } from "node:test";

import { boxPercent, nearScreen, overlayAlpha, sampleIndex, samples, STRIP_TILE, stripCount, tileSize, upscale } from "../../../../service/static/lib/layout.mjs";

test("tiles: small maps get small tiles", () => {
  assert.deepEqual([1, 4, 12, 24, 112].map(tileSize), [22, 38, 46, 56, 56]);
});

test("a strip holds the tiles that fit on one line, at least one", () => {
  const pitch = STRIP_TILE + 4 + 3;
  assert.equal(stripCount(10 * pitch - 3), 10);   // ten tiles and the nine gaps between them
  assert.equal(stripCount(10 * pitch - 4), 9);
  assert.equal(stripCount(0), 1);
  assert.equal(stripCount(100, 20, 0, 0), 5);
});

test("a box in input pixels as percentages of the picture, rows and columns apart", () => {
  assert.deepEqual(boxPercent({ left: 56, top: 0, right: 112, bottom: 224 }, [224, 224]), { left: 25, top: 0, width: 25, height: 100 });
  assert.deepEqual(boxPercent({ left: 0, top: 10, right: 32, bottom: 20 }, [40, 64]), { left: 0, top: 25, width: 50, height: 25 });
});

test("small inputs are enlarged by a whole factor to the target", () => {
  assert.equal(upscale(8, 8), 28);
  assert.equal(upscale(64, 64), 4);
  assert.equal(upscale(224, 224), 1);
  assert.equal(upscale(300, 200), 1);
  assert.equal(upscale(28, 56, 112), 2);
});

test("the heat's opacity: none without evidence, the control's at the strongest, the middle well visible", () => {
  assert.equal(overlayAlpha(0, 0.8), 0);
  assert.equal(overlayAlpha(1, 0.8), 0.8);
  assert.equal(overlayAlpha(0.25, 1), 0.5);
  assert.ok(overlayAlpha(0.25, 0.8) > 0.25 * 0.8);  // more than a linear fade
  assert.equal(overlayAlpha(2, 0.5), 0.5);          // clipped
  assert.equal(overlayAlpha(NaN, 1), 0);
  assert.equal(overlayAlpha(1, 1.5), 1);
  assert.equal(overlayAlpha(1, 0), 0);
});

test("near the screen: overlapping the viewport grown by the margin", () => {
  assert.equal(nearScreen({ top: 100, bottom: 150 }, 1000, 0), true);
  assert.equal(nearScreen({ top: 1200, bottom: 1250 }, 1000, 300), true);
  assert.equal(nearScreen({ top: 1301, bottom: 1350 }, 1000, 300), false);
  assert.equal(nearScreen({ top: -400, bottom: -301 }, 1000, 300), false);
  assert.equal(nearScreen({ top: -400, bottom: -300 }, 1000, 300), true);
});

test("a sprite is painted at the size it is shown at, never above the map's own", () => {
  assert.equal(samples(112, 40), 40);
  assert.equal(samples(112, 40, 2), 80);
  assert.equal(samples(7, 40, 2), 7);
  assert.equal(samples(1, 22), 1);
  assert.deepEqual([...sampleIndex(4, 4)], [0, 1, 2, 3]);
  assert.deepEqual([...sampleIndex(112, 4)], [14, 42, 70, 98]);
  assert.deepEqual([...sampleIndex(3, 2)], [0, 2]);
  assert.deepEqual([...sampleIndex(10, 1)], [5]);
});
