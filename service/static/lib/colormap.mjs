// Colour maps as the server makes them (service/encoding.py): a few RGB stops, evenly
// spaced over 0..1 and interpolated linearly to 256 entries. The stops themselves come
// from the server, in the layer catalogue's `colormaps` block (GET /v1/models/{name}/layers),
// so the page paints feature maps and filters with the server's own tables. Pure: no canvas.

export const LEVELS = 256;

/** numpy's linspace(0, 1, n)[i]: i * (1 / (n - 1)), with the last one exactly 1. */
const linspace = (i, n) => (i === n - 1 ? 1 : i * (1 / (n - 1)));

/** Stops [[r, g, b], ...] -> a 256 x RGB table (Uint8ClampedArray, entry k at 3k..3k+2), the
 * same numbers as the server's `np.interp(...).round().astype(np.uint8)`: the same
 * arithmetic in the same order, and Uint8ClampedArray rounds halves to even as numpy does. */
export function lut(stops) {
  if (!Array.isArray(stops) || stops.length < 2 || !stops.every((s) => Array.isArray(s) && s.length === 3)) {
    throw new Error(`a colour map needs at least two [r, g, b] stops, got ${JSON.stringify(stops)}`);
  }
  const n = stops.length, table = new Uint8ClampedArray(LEVELS * 3);
  for (let i = 0; i < LEVELS; i++) {
    const x = linspace(i, LEVELS);
    let j = Math.min(n - 2, Math.floor(x * (n - 1)));
    // Floating point may put x a hair on either side of a stop: the segment is the one with xp[j] <= x < xp[j+1].
    while (j > 0 && x < linspace(j, n)) j--;
    while (j < n - 2 && x >= linspace(j + 1, n)) j++;
    const x0 = linspace(j, n), x1 = linspace(j + 1, n);
    for (let c = 0; c < 3; c++) {
      table[i * 3 + c] = x === 1 ? stops[n - 1][c]
        : ((stops[j + 1][c] - stops[j][c]) / (x1 - x0)) * (x - x0) + stops[j][c];
    }
  }
  return table;
}

/** Where a value sits on a lo..hi range, 0..1 (clipped); a flat range (hi <= lo) counts as 1 wide. */
export function fraction(value, lo, hi) {
  const span = hi > lo ? hi - lo : 1;
  return Math.max(0, Math.min(1, (value - lo) / span));
}

/** A value's entry (0..255) in a table, on a lo..hi range. */
export const level = (value, lo, hi) => Math.round(fraction(value, lo, hi) * (LEVELS - 1));

/** A signed weight's entry on a diverging map: -peak -> 0, 0 -> the middle, +peak -> 255. */
export const divergingLevel = (value, peak) => Math.round((value / peak + 1) * 127.5);

/** Writes entry k of the table into RGBA pixels at byte offset o (alpha given, opaque by default). */
export function put(rgba, o, table, k, alpha = 255) {
  rgba[o] = table[k * 3]; rgba[o + 1] = table[k * 3 + 1]; rgba[o + 2] = table[k * 3 + 2]; rgba[o + 3] = alpha;
}

/** The stops as a CSS left-to-right gradient, for a legend. */
export function cssGradient(stops) {
  const hex = (rgb) => "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
  return `linear-gradient(90deg, ${stops.map(hex).join(", ")})`;
}

/** The catalogue's `colormaps` block -> the tables each picture uses, by role:
 * {feature_maps, filters, saliency} (each {name, stops, table}). Names the valid maps
 * when a role names one the block does not define. */
export function colormapsFrom(block) {
  const roles = {};
  for (const role of ["feature_maps", "filters", "saliency"]) {
    const name = block?.[role];
    const stops = block?.stops?.[name];
    if (!stops) {
      throw new Error(`the server's colormaps give no stops for ${role} (${name}); defined: ${Object.keys(block?.stops || {}).join(", ") || "none"}`);
    }
    roles[role] = { name, stops, table: lut(stops) };
  }
  return roles;
}
