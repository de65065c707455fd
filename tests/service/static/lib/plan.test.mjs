// service/static/lib/plan.mjs: which layers the page asks for, in which requests, once each.
import assert from "node:assert/strict";
import { test } from "node:test";

import { batches, FLOAT16, mapBytes, mapQueue, shownLayers } from "../../../../service/static/lib/plan.mjs";

const ROWS = [
  { id: "conv1", layers: ["conv1"], output: "conv1", block: false },
  { id: "layer1.0", layers: ["layer1.0.conv1", "layer1.0", "layer1.0.relu_1"], output: "layer1.0.relu_1", block: true },
  { id: "layer1.1", layers: ["layer1.1.conv1", "layer1.1.relu_1"], output: "layer1.1.relu_1", block: true },
];

test("a map's size: C x H x W float16 values, or C units", () => {
  assert.equal(mapBytes({ output_shape: [-1, 256, 56, 56] }), 256 * 56 * 56 * FLOAT16);
  assert.equal(mapBytes({ output_shape: [-1, 10] }), 20);
});

test("closed blocks show their output, open ones every layer, in page order", () => {
  assert.deepEqual(shownLayers(ROWS), ["conv1", "layer1.0.relu_1", "layer1.1.relu_1"]);
  assert.deepEqual(shownLayers(ROWS, (row) => row.id === "layer1.0"),
    ["conv1", "layer1.0.conv1", "layer1.0", "layer1.0.relu_1", "layer1.1.relu_1"]);
});

test("requests are cut by bytes and by the length of the names, in order; a big layer goes alone", () => {
  const size = { a: 3, b: 3, c: 9, d: 1, e: 1 };
  assert.deepEqual(batches(["a", "b", "c", "d", "e"], (n) => size[n], { budget: 6 }), [["a", "b"], ["c"], ["d", "e"]]);
  assert.deepEqual(batches(["a", "b", "c"], () => 1, { budget: 100, chars: 4 }), [["a", "b"], ["c"]]);
  assert.deepEqual(batches([], () => 1), []);
});

/** A fake predict: records each request's names and answers when told to. */
function fakeServer() {
  const asked = [], answers = [];
  const fetchMaps = (names) => new Promise((resolve, reject) => { asked.push(names); answers.push({ names, resolve, reject }); });
  const answer = (i) => answers[i].resolve(Object.fromEntries(answers[i].names.map((n) => [n, `map of ${n}`])));
  return { asked, answers, fetchMaps, answer };
}

test("the queue asks once per layer, in batches, and reports what arrives", async () => {
  const server = fakeServer(), loaded = [];
  const queue = mapQueue({ fetchMaps: server.fetchMaps, bytesOf: () => 1, onLoaded: (maps) => loaded.push(Object.keys(maps)),
                           limits: { budget: 2 } });
  queue.reset(["conv1"]);
  queue.want(["conv1", "a", "b"]);
  queue.want(["b", "c"]);               // the same tick: one flush
  await Promise.resolve();
  assert.deepEqual(server.asked, [["a", "b"], ["c"]]);
  assert.equal(queue.pending(), 2);
  queue.want(["a", "c"]);               // on their way: not again
  await Promise.resolve();
  assert.equal(server.asked.length, 2);
  server.answer(1); server.answer(0);
  await queue.idle();
  assert.deepEqual(loaded, [["c"], ["a", "b"]]);
  assert.ok(queue.has("a") && queue.has("conv1") && !queue.has("d"));
  assert.equal(queue.pending(), 0);
});

test("a new image drops the old one's answers and asks again", async () => {
  const server = fakeServer(), loaded = [];
  const queue = mapQueue({ fetchMaps: server.fetchMaps, bytesOf: () => 1, onLoaded: (maps) => loaded.push(Object.keys(maps)) });
  queue.reset();
  queue.want(["a"]);
  await Promise.resolve();
  queue.reset();                        // another image
  queue.want(["a"]);
  await Promise.resolve();
  assert.deepEqual(server.asked, [["a"], ["a"]]);
  server.answer(0);                     // the old image's answer
  server.answer(1);
  await queue.idle();
  assert.deepEqual(loaded, [["a"]]);
});

test("a failed request is reported, and its layers are asked for again next time", async () => {
  const server = fakeServer(), errors = [];
  const queue = mapQueue({ fetchMaps: server.fetchMaps, bytesOf: () => 1, onError: (e) => errors.push(e.message) });
  queue.reset();
  queue.want(["a"]);
  await Promise.resolve();
  server.answers[0].reject(new Error("503: busy"));
  await queue.idle();
  assert.deepEqual(errors, ["503: busy"]);
  assert.equal(queue.has("a"), false);
  queue.want(["a"]);
  await Promise.resolve();
  assert.deepEqual(server.asked, [["a"], ["a"]]);
});

test("idle resolves at once when nothing is asked for", async () => {
  const queue = mapQueue({ fetchMaps: () => Promise.resolve({}), bytesOf: () => 1 });
  await queue.idle();
});

test("an open stage shows what its rows show", () => {
  const stage = { id: "layer1.*", layers: ROWS.slice(1).flatMap((r) => r.layers), output: "layer1.1.relu_1", children: ROWS.slice(1) };
  const rows = [ROWS[0], stage];
  assert.deepEqual(shownLayers(rows), ["conv1", "layer1.1.relu_1"]);
  assert.deepEqual(shownLayers(rows, (r) => r.id === "layer1.*"), ["conv1", "layer1.0.relu_1", "layer1.1.relu_1"]);
  assert.deepEqual(shownLayers(rows, (r) => r.id === "layer1.*" || r.id === "layer1.1"),
    ["conv1", "layer1.0.relu_1", "layer1.1.conv1", "layer1.1.relu_1"]);
});

test("a request made elsewhere (the first, with the classes) is tracked: its layers are not asked for again", async () => {
  const server = fakeServer(), loaded = [];
  const queue = mapQueue({ fetchMaps: server.fetchMaps, bytesOf: () => 1, onLoaded: (maps) => loaded.push(Object.keys(maps)) });
  queue.reset();
  let answer;
  queue.want(["a"]);                    // asked for, then tracked before the queue sends it
  queue.track(["a", "b"], new Promise((resolve) => { answer = resolve; }));
  queue.want(["a", "b", "c"]);
  await Promise.resolve();
  assert.deepEqual(server.asked, [["c"]]);
  assert.equal(queue.pending(), 2);
  answer({ a: 1, b: 2 });
  server.answer(0);
  await queue.idle();
  assert.deepEqual(loaded, [["a", "b"], ["c"]]);
  queue.track([], Promise.resolve({ z: 0 }));  // nothing to track: ignored
  assert.equal(queue.pending(), 0);
});
