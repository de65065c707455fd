// The overview's rows: one per block of a deep network, one per layer of a plain chain.
// A layer's `group` (GET /v1/models/{name}/layers, written by the importer) is its block: the
// module holding its residual Add or Concat (`layer2.1`, `features.denseblock1.denselayer3`),
// or the module beside the blocks at the same level (`conv1`, `maxpool`); null in a chain
// (the project's own TinyVGG, AlexNet), which keeps one row per layer. Pure.

/** Whether the network has blocks: some layer names its group. */
export const hasBlocks = (layers) => layers.some((layer) => layer.group != null);

/** The longest run of dotted parts every name starts with ("" when none). */
export function commonPrefix(names) {
  if (!names.length) return "";
  const parts = names[0].split(".");
  let n = parts.length;
  for (const name of names.slice(1)) {
    const other = name.split(".");
    let i = 0;
    while (i < n && i < other.length && other[i] === parts[i]) i++;
    n = i;
  }
  return parts.slice(0, n).join(".");
}

/**
 * The rows of the overview, shallow to deep: [{id, title, group, layers, output, block}].
 *   layers: the names of the row's layers, in graph order; output: the last of them, the
 *   block's output (after the merge and its activation), which the closed row shows;
 *   block: whether the row holds more than one layer (it opens to them);
 *   title: the group (where a group comes back, its part without the group's own layer is
 *   titled by the module its layers share: a dense block's first dense layer, whose Concat
 *   is the block's); id: the title, made unique.
 * A block's layers are consecutive in graph order: a group that comes back later (a dense
 * block's closing Concat after its dense layers) is a row of its own. Without groups each
 * layer is a row.
 */
export function blockRows(layers) {
  const runs = [];
  for (const layer of layers) {
    const last = runs.at(-1);
    if (last && layer.group != null && last.group === layer.group) last.layers.push(layer.name);
    else runs.push({ group: layer.group ?? null, layers: [layer.name] });
  }
  const runsOf = new Map();
  for (const run of runs) runsOf.set(run.group, (runsOf.get(run.group) || 0) + 1);
  const seen = new Map();
  return runs.map(({ group, layers: names }) => {
    // A block is titled by its group; where the group comes back (a dense block's closing
    // Concat after its dense layers), the part without the group's own layer by the module its
    // layers share (the first dense layer, which has no Concat of its own).
    const split = group != null && runsOf.get(group) > 1 && !names.includes(group);
    const title = (split && commonPrefix(names)) || group || names[0];
    const count = (seen.get(title) || 0) + 1;
    seen.set(title, count);
    return { id: count === 1 ? title : `${title} (${count})`, title, group, layers: names, output: names.at(-1),
             block: names.length > 1 };
  });
}

/** The rows that hold a layer, outermost first (a stage, then its block): the ids to open
 * to show its card; [] when no row holds it. */
export function rowPath(rows, layer) {
  const row = rows.find((r) => r.layers.includes(layer));
  if (!row) return [];
  return [row.id, ...(row.children ? rowPath(row.children, layer) : [])];
}

/** "2 conv · 1 merge · 2 activation": how many layers of each kind, in order of first appearance. */
export function kindSummary(layers) {
  const counts = new Map();
  for (const layer of layers) counts.set(layer.kind || "other", (counts.get(layer.kind || "other") || 0) + 1);
  return [...counts].map(([kind, n]) => `${n} ${kind}`).join(" · ");
}

/** Above this many rows the overview groups blocks into their stages (stageRows). */
export const STAGE_ROWS = 24;

/** A dotted name's module: "features.denseblock1" for "features.denseblock1.denselayer2". */
export const parentOf = (name) => name.split(".").slice(0, -1).join(".");

/**
 * A deep net's rows, fewer: where more than `most` rows, consecutive rows that are direct
 * parts of one module (a DenseNet's dense layers of a dense block, with the block's own
 * closing Concat; a ResNet-101's residual blocks of `layer3`), two or more of them blocks,
 * become one stage row, {id: "<module>.*", title: <module>, layers, output, block: true,
 * children: [their rows]}: its output is its last row's. Other rows stay as they are; a net
 * with few rows keeps one row per block.
 */
export function stageRows(rows, most = STAGE_ROWS) {
  if (rows.length <= most) return rows;
  const out = [];
  for (let i = 0; i < rows.length;) {
    const module = parentOf(rows[i].title);
    let j = i;
    while (module && j < rows.length && (rows[j].title === module || parentOf(rows[j].title) === module)) j++;
    const members = rows.slice(i, j);
    if (members.filter((r) => r.block).length >= 2) {
      out.push({ id: `${module}.*`, title: module, group: null, layers: members.flatMap((r) => r.layers),
                 output: members.at(-1).output, block: true, children: members });
      i = j;
    } else {
      out.push(rows[i]);
      i++;
    }
  }
  return out;
}
