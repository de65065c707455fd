// service/static/lib/blocks.mjs: the overview's rows from the layers' groups, on the shapes of
// the importer's real catalogues (a residual net, a dense net) and of a plain chain.
import assert from "node:assert/strict";
import { test } from "node:test";

import { blockRows, commonPrefix, hasBlocks, kindSummary, parentOf, rowPath, stageRows } from "../../../../service/static/lib/blocks.mjs";

const layer = (name, group, kind = "conv") => ({ name, group, kind, output_shape: [-1, 8, 4, 4] });

// resnet18 as the importer lists it (stem modules beside the blocks are their own groups)
const RESNET = [
  layer("conv1", "conv1"), layer("relu", "relu"), layer("maxpool", "maxpool", "pool"),
  layer("layer1.0.conv1", "layer1.0"), layer("layer1.0.relu", "layer1.0"), layer("layer1.0.conv2", "layer1.0"),
  layer("layer1.0", "layer1.0", "merge"), layer("layer1.0.relu_1", "layer1.0", "activation"),
  layer("layer1.1.conv1", "layer1.1"), layer("layer1.1", "layer1.1", "merge"), layer("layer1.1.relu_1", "layer1.1", "activation"),
  layer("avgpool", "avgpool", "pool"),
];

// densenet121's first dense block: dense layer 1 has no Concat of its own (its layers belong to
// the block), each later one starts with the Concat of what came before, and the block's own
// Concat closes it.
const DENSE = [
  layer("features.pool0", "features.pool0", "pool"),
  layer("features.denseblock1.denselayer1.relu1", "features.denseblock1", "activation"),
  layer("features.denseblock1.denselayer1.conv2", "features.denseblock1"),
  layer("features.denseblock1.denselayer2", "features.denseblock1.denselayer2", "merge"),
  layer("features.denseblock1.denselayer2.conv2", "features.denseblock1.denselayer2"),
  layer("features.denseblock1", "features.denseblock1", "merge"),
  layer("features.transition1.conv", "features.transition1"),
];

test("a chain without groups keeps one row per layer, none of them a block", () => {
  const chain = [layer("features.0", null), layer("features.1", null), layer("classifier.1", null, "linear")];
  assert.equal(hasBlocks(chain), false);
  const rows = blockRows(chain);
  assert.deepEqual(rows.map((r) => [r.id, r.layers, r.output, r.block]),
    [["features.0", ["features.0"], "features.0", false], ["features.1", ["features.1"], "features.1", false],
     ["classifier.1", ["classifier.1"], "classifier.1", false]]);
});

test("a residual net: one row per block, its output the last layer (after the Add and its ReLU)", () => {
  assert.equal(hasBlocks(RESNET), true);
  const rows = blockRows(RESNET);
  assert.deepEqual(rows.map((r) => r.id), ["conv1", "relu", "maxpool", "layer1.0", "layer1.1", "avgpool"]);
  const block = rows[3];
  assert.deepEqual(block, { id: "layer1.0", title: "layer1.0", group: "layer1.0", block: true, output: "layer1.0.relu_1",
    layers: ["layer1.0.conv1", "layer1.0.relu", "layer1.0.conv2", "layer1.0", "layer1.0.relu_1"] });
  assert.equal(rows[0].block, false);
  assert.deepEqual(rowPath(rows, "layer1.1.conv1"), ["layer1.1"]);
  assert.deepEqual(rowPath(rows, "nowhere"), []);
  // every layer in exactly one row, in graph order
  assert.deepEqual(rows.flatMap((r) => r.layers), RESNET.map((l) => l.name));
});

test("a dense net: a group that comes back is a row of its own, titled by what its layers share", () => {
  const rows = blockRows(DENSE);
  assert.deepEqual(rows.map((r) => [r.id, r.title, r.group, r.output]), [
    ["features.pool0", "features.pool0", "features.pool0", "features.pool0"],
    ["features.denseblock1.denselayer1", "features.denseblock1.denselayer1", "features.denseblock1",
     "features.denseblock1.denselayer1.conv2"],
    ["features.denseblock1.denselayer2", "features.denseblock1.denselayer2", "features.denseblock1.denselayer2",
     "features.denseblock1.denselayer2.conv2"],
    ["features.denseblock1", "features.denseblock1", "features.denseblock1", "features.denseblock1"],
    ["features.transition1", "features.transition1", "features.transition1", "features.transition1.conv"],
  ]);
});

test("titles repeat only where names do: the id is made unique", () => {
  const rows = blockRows([layer("a.x", "a"), layer("b", "b"), layer("a.y", "a")]);
  assert.deepEqual(rows.map((r) => r.id), ["a.x", "b", "a.y"]);
  const again = blockRows([layer("a.x", "a"), layer("a", "a"), layer("b", "b"), layer("a.x", "a"), layer("a", "a")]);
  assert.deepEqual(again.map((r) => r.id), ["a", "b", "a (2)"]);
});

test("a block is titled by its group even where its layers share a longer name (MobileNet's block.*)", () => {
  const rows = blockRows([layer("features.1.block.0.0", "features.1"), layer("features.1.block.2.0", "features.1")]);
  assert.equal(rows[0].title, "features.1");
});

test("names that share nothing (another exporter's) are titled by their group", () => {
  const rows = blockRows([layer("Conv_0", "stage1"), layer("Relu_1", "stage1")]);
  assert.equal(rows[0].title, "stage1");
  assert.equal(rows[0].output, "Relu_1");
});

test("common dotted prefixes, whole parts only", () => {
  assert.equal(commonPrefix(["layer1.0.conv1", "layer1.0", "layer1.0.relu_1"]), "layer1.0");
  assert.equal(commonPrefix(["layer1.10.a", "layer1.1.a"]), "layer1");
  assert.equal(commonPrefix(["conv1"]), "conv1");
  assert.equal(commonPrefix(["a.b", "c.d"]), "");
  assert.equal(commonPrefix([]), "");
});

test("a block's kinds, counted in order of first appearance", () => {
  assert.equal(kindSummary(RESNET.slice(3, 8)), "3 conv · 1 merge · 1 activation");
  assert.equal(kindSummary([{ name: "x" }]), "1 other");
});

test("few rows: one per block, no stages", () => {
  const rows = blockRows(RESNET);
  assert.equal(stageRows(rows), rows);
});

test("many rows: a dense block's dense layers and its closing Concat become one stage; stems and transitions stay", () => {
  const rows = blockRows(DENSE);
  const staged = stageRows(rows, 2);
  assert.deepEqual(staged.map((r) => r.id), ["features.pool0", "features.denseblock1.*", "features.transition1"]);
  const stage = staged[1];
  assert.equal(stage.title, "features.denseblock1");
  assert.equal(stage.output, "features.denseblock1");  // the block's own Concat: its output
  assert.deepEqual(stage.children.map((r) => r.id),
    ["features.denseblock1.denselayer1", "features.denseblock1.denselayer2", "features.denseblock1"]);
  assert.deepEqual(stage.layers, DENSE.slice(1, 6).map((l) => l.name));
  assert.deepEqual(rowPath(staged, "features.denseblock1.denselayer2.conv2"),
    ["features.denseblock1.*", "features.denseblock1.denselayer2"]);
  assert.deepEqual(rowPath(staged, "features.pool0"), ["features.pool0"]);
  assert.equal(parentOf("features.denseblock1.denselayer2"), "features.denseblock1");
  assert.equal(parentOf("conv1"), "");
});

test("a ResNet's stages group its residual blocks; single-layer rows never make a stage", () => {
  const deep = [layer("conv1", "conv1"), layer("relu", "relu"), layer("maxpool", "maxpool", "pool"),
    ...["layer1.0", "layer1.1", "layer1.2", "layer2.0"].flatMap((b) => [layer(`${b}.conv1`, b), layer(`${b}.relu_1`, b)])];
  const staged = stageRows(blockRows(deep), 3);
  assert.deepEqual(staged.map((r) => [r.id, r.output]), [["conv1", "conv1"], ["relu", "relu"], ["maxpool", "maxpool"],
    ["layer1.*", "layer1.2.relu_1"], ["layer2.0", "layer2.0.relu_1"]]);
});
