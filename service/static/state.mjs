// What the page knows, defined and documented here only. The controller (explorer.mjs) sets
// the model and the image; the views read it, and write the fields marked (view).
// The form controls' own values (#shared, #order, #method, #target) stay in the controls,
// which the browser may restore on a reload; the views read them there.

import { blockRows, hasBlocks, stageRows } from "./lib/blocks.mjs";
import { colormapsFrom } from "./lib/colormap.mjs";

export const state = {
  // ---- the model version on show (selectModel; all reset when it changes) ----
  /** Its metadata, GET /v1/models/{name}/versions/{v}; null when no model serves. */
  meta: null,
  /** /v1/models/{name}/versions/{v}: every URL below it is immutable, so pictures are cached. */
  base: "",
  /** Its layer catalogue, GET /v1/models/{name}/layers?version={v}: `layers`, `explanations`
   * ({methods, default_method, default_layer, unavailable}) and `colormaps`. */
  catalogue: null,
  /** The server's colour maps by role, from the catalogue: {feature_maps, filters, saliency},
   * each {name, stops, table} (lib/colormap.mjs colormapsFrom). */
  colormaps: null,
  /** The same model's ready version at the other precision (an int8 version's float version, a
   * float version's newest int8 one): {version, precision, base}, or null (lib/quantization.mjs). */
  twin: null,
  /** The record of the int8 one of the pair (GET .../quantization), or null. */
  quantization: null,

  // ---- the server's models (views/models.mjs) ----
  /** GET /v1/models's `models`, as last listed. */
  models: [],
  /** A version the user chose in the picker: shown until it stops serving; null: the default. */
  pinned: null,
  /** The overview's rows (lib/blocks.mjs): one per block, or per layer of a chain; a deep
   * net's blocks in stages (rows with `children`). */
  rows: [],
  /** Whether the model has blocks (layers with a `group`): the overview shows block rows. */
  blocks: false,

  // ---- the image being looked at (look) ----
  /** The Blob sent to the server, and what to call it. */
  image: null,
  imageName: "",
  /** The image as the model sees it: a canvas at the input size (grey for grey models). */
  input: null,
  /** [{label, index, probability}], best first, every class. */
  probabilities: [],
  /** layer -> its feature maps on this image (lib/maps.mjs featureMap: {c, h, w, data, min, max}):
   * only the layers shown so far, asked for as rows need them (lib/plan.mjs). */
  maps: {},
  /** layer -> a promise of the twin version's maps of that layer on this image, fetched when a
   * channel of it is opened (views/channel.mjs). */
  twinMaps: {},

  // ---- how the overview shows them (view: layers, channel) ----
  /** layer -> the page of channels shown. */
  pages: {},
  /** layer -> true: its silent channels are shown too. */
  silent: {},
  /** The channel opened in the detail view: {layer, channel}, or null. */
  selected: null,
  /** row id -> true: the block is open, its layers shown (view: blocks). */
  open: {},

  // ---- explanations (view: explanation) ----
  /** The AbortController of the explanation in flight: a newer one aborts it. */
  explainRun: null,
  /** The last explanation's map: {h, w, data (0..1, row-major), label, method}, painted over
   * the input again when the opacity changes; null when none. */
  explained: null,
};

/** A new model version: its metadata, and nothing left of the one before. */
export function showModel(meta, base) {
  Object.assign(state, { meta, base, catalogue: null, colormaps: null, maps: {}, twinMaps: {}, pages: {}, silent: {},
                         selected: null, twin: null, quantization: null,
                         rows: stageRows(blockRows(meta.layers)), blocks: hasBlocks(meta.layers), open: {}, explained: null });
}

/** Its layer catalogue, and the colour maps the server paints with. */
export function setCatalogue(catalogue) {
  state.catalogue = catalogue;
  state.colormaps = colormapsFrom(catalogue.colormaps);
}

/** A layer of the model on show, by name (its metadata entry). */
export const layerInfo = (name) => state.meta.layers.find((l) => l.name === name);

/** The explanation methods on offer, from the catalogue: {methods, default_method, unavailable}. */
export const explanations = () => state.catalogue?.explanations ?? { methods: [], default_method: null, unavailable: null };
