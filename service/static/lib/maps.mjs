// Feature maps of one image: the predict answer's `feature_maps` ({layer: {data: base64 .npy}})
// as numbers with each channel's range, and how the overview orders and pages channels. Pure.

import { dims } from "./geometry.mjs";
import { parseNpyBase64 } from "./npy.mjs";

/** One layer's maps: {c, h, w, data (C*H*W floats, C order), min, max (per channel)}. */
export function featureMap(data, [c, h, w]) {
  if (data.length !== c * h * w) throw new Error(`${data.length} values do not make ${c} × ${h} × ${w} maps`);
  const min = new Float32Array(c), max = new Float32Array(c);
  for (let k = 0; k < c; k++) {
    let lo = Infinity, hi = -Infinity;
    for (let i = k * h * w; i < (k + 1) * h * w; i++) { const v = data[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    min[k] = lo; max[k] = hi;
  }
  return { c, h, w, data, min, max };
}

/** The answer's `feature_maps` -> {layer: featureMap}, shaped by the model's `layers`. */
export function featureMaps(answer, layers) {
  const maps = {};
  for (const [name, entry] of Object.entries(answer)) {
    const layer = layers.find((l) => l.name === name);
    if (!layer) throw new Error(`feature maps of ${name}, a layer the model does not list (${layers.map((l) => l.name).join(", ")})`);
    maps[name] = featureMap(parseNpyBase64(entry.data).data, dims(layer));
  }
  return maps;
}

/** The lowest minimum and highest maximum over the layer's channels: one range for all. */
export function layerRange(map) {
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < map.c; k++) { lo = Math.min(lo, map.min[k]); hi = Math.max(hi, map.max[k]); }
  return [lo, hi];
}

/** The channel's colour range: its own, or the layer's when `shared`. */
export const channelRange = (map, channel, shared) => (shared ? layerRange(map) : [map.min[channel], map.max[channel]]);

/** Channels that fire: something above zero on this image. */
export const firing = (map) => Array.from(map.max).filter((v) => v > 0).length;

/** The channels shown, in order: silent ones (nothing above zero, common after a ReLU deep in a
 * network) only with `silent`; by activity (highest maximum first, ties by index) or by index. */
export function channelOrder(map, { silent = false, byActivity = true } = {}) {
  let channels = [...Array(map.c).keys()];
  if (!silent) channels = channels.filter((k) => map.max[k] > 0);
  if (byActivity) channels.sort((a, b) => map.max[b] - map.max[a] || a - b);
  return channels;
}

/** Page `page` of `size` channels, clamped to the pages there are: {page, pages, shown}. */
export function pageOf(channels, page, size) {
  const pages = Math.max(1, Math.ceil(channels.length / size));
  const at = Math.min(Math.max(0, page || 0), pages - 1);
  return { page: at, pages, shown: channels.slice(at * size, (at + 1) * size) };
}

/** The strongest unit of one channel's values (h*w, row-major): {y, x}, the first on ties. */
export function strongestUnit(values, w) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return { y: Math.floor(best / w), x: best % w };
}
