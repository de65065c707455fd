// convscope explorer: overview first, detail on demand. Everything comes from this server
// (no CDN, no bundler, works offline): ES modules served as they are.
//
//   lib/      pure modules, no DOM and no page state, tested by node's test runner
//             (tests/service/static/): api (the client and every path), npy (the .npy reader),
//             colormap (the server's colour maps as tables), geometry, maps, format
//   ui/       the browser's side of them: dom helpers, canvas painting, the bound API client
//   state.mjs what the page knows, documented where it is defined
//   views/    one module per part of the page: key (the API key prompt), models (pickers and
//             summary), start (1: samples, file, drop), prediction and explanation (2), blocks
//             (3: the overview, one row per block of a deep net or per layer of a chain),
//             layers (3: a layer's card, a block's strip) and channel (3: one channel), network
//             (4), quantization (5: int8 and float)
//   this file the controller: which view draws when a model or an image is chosen, and the
//             queue of feature-map requests (lib/plan.mjs).
//
// A new view (a quantized version beside its float one) is a module in views/ with a render
// function reading `state`, called below from selectModel (what depends on the model only) or
// look (what depends on the image).
//
// Feature maps arrive as float16 .npy, only for the layers the page shows (a closed block's
// output, an open block's layers) and only as their rows come near the screen: the first
// request brings the classes and the first rows' maps, lib/plan.mjs batches the rest. They
// are drawn here, one sprite per layer; pictures (samples, top images, filters) are fetched
// with the API key when the server needs one and cached by URL.

import { paths } from "./lib/api.mjs";
import { rowPath } from "./lib/blocks.mjs";
import { featureMaps } from "./lib/maps.mjs";
import { batches, mapBytes, mapQueue, shownLayers } from "./lib/plan.mjs";
import { clearError, guarded, painted, showError } from "./ui/dom.mjs";
import { askingForKey, client, getJSON } from "./ui/server.mjs";
import { layerInfo, setCatalogue, showModel, state } from "./state.mjs";
import * as blocks from "./views/blocks.mjs";
import * as channel from "./views/channel.mjs";
import * as explanation from "./views/explanation.mjs";
import * as key from "./views/key.mjs";
import * as layers from "./views/layers.mjs";
import * as models from "./views/models.mjs";
import * as network from "./views/network.mjs";
import * as prediction from "./views/prediction.mjs";
import * as quantization from "./views/quantization.mjs";
import * as start from "./views/start.mjs";

// Timings the page records for itself (read by benchmarks/explorer_screenshots.py), whether
// feature maps are on their way (`mapsPending()`) and the rows to open to reach a layer
// (`rowPath(layer)`): read by the browser tests and the benchmark.
window.convscope = { timings: [], ready: false, mapsPending: () => maps.pending(),
                     rowPath: (layer) => rowPath(state.rows, layer) };

const bytesOf = (name) => mapBytes(layerInfo(name));

/** A predict answer's maps as numbers, for the model it was asked of (none if it changed
 * meanwhile); the time the decoding took goes in the page's timings. */
function decoded(body, meta) {
  if (meta !== state.meta) return {};
  const started = performance.now();
  const maps = featureMaps(body.feature_maps ?? {}, meta.layers);
  window.convscope.timings.push({ what: "maps", layers: Object.keys(maps).length, decode_ms: performance.now() - started,
                                  server_ms: body.timings_ms.total });
  return maps;
}
const postImage = (path, signal) => client.request(path, {
  method: "POST", body: state.image, signal,
  headers: { "Content-Type": state.image.type || "application/octet-stream" },
});

/** The maps of the image on show, asked for as the overview's rows need them: one predict
 * (top class only) per batch. */
const maps = mapQueue({
  bytesOf,
  fetchMaps: async (names) => {
    const meta = state.meta;
    return decoded(await (await postImage(paths.predict(state.base, 1, names))).json(), meta);
  },
  onLoaded: (loaded) => {
    Object.assign(state.maps, loaded);
    blocks.update(Object.keys(loaded));
    const selected = state.selected;
    if (selected && selected.layer in loaded) channel.show(selected.layer, selected.channel, false).catch(showError);
  },
  onError: showError,
});

/** Shows a model version (its default when `version` is not given), and the image on show
 * again through it. */
async function selectModel(name, version) {
  clearError();
  const meta = await getJSON(paths.model(name, version));
  showModel(meta, paths.versionPath(meta.name, meta.version));
  maps.reset();
  models.showSummary(meta);
  quantization.findTwin();
  network.render();
  setCatalogue(await getJSON(paths.catalogue(meta.name, meta.version)));
  explanation.renderMethods();
  await quantization.render();
  await start.renderSamples(look);
  if (state.image) await look(state.image, state.imageName);
}

/** Looks at an image: one predict for the classes and the maps of the first rows on screen,
 * the others on screen beside it, then the explanation once they are drawn. */
async function look(blob, name) {
  clearError();
  state.image = blob; state.imageName = name;
  const started = performance.now();
  const meta = state.meta;
  explanation.clearTargets();
  maps.reset();
  state.maps = {};
  // the rows near the screen (or, none being there, the first ones) ask for their maps: the
  // first batch comes with the classes, the others beside it
  prediction.reveal();
  const near = blocks.show();
  const [first = [], ...others] = batches(near.length ? near : shownLayers(state.rows, (row) => state.open[row.id]), bytesOf);
  const predicted = client.request(paths.predict(state.base, meta.labels.length, first),
    { method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" } }).then((r) => r.json());
  maps.track(first, predicted.then((body) => decoded(body, meta)));
  maps.want(others.flat());
  const [body, input] = await Promise.all([predicted, prediction.modelView(blob, meta.input)]);
  if (meta !== state.meta || blob !== state.image) return;  // the model or the image changed meanwhile
  const answered = performance.now();

  state.input = input;
  state.probabilities = body.predictions;
  state.twinMaps = {};
  prediction.render(body.timings_ms, answered - started, first.length);
  explanation.renderTargets();
  blocks.observe();  // the prediction above may have moved the rows: those now near ask too
  channel.place();
  quantization.redraw();
  if (state.selected && state.maps[state.selected.layer]) await channel.show(state.selected.layer, state.selected.channel, false);
  await painted();
  const drawn = performance.now();
  await maps.idle();
  await painted();
  if (blob !== state.image) return;
  const shown = performance.now();
  // The explanation (a hundred forward passes and more for the perturbation methods) starts
  // once the rows on screen are drawn: started with the prediction, it slowed both down on a
  // small machine where the browser and the server share the cores (benchmarks/README.md).
  const explained = explanation.explain();
  window.convscope.timings.push({ what: "image", model: meta.name, predict_ms: answered - started, draw_ms: drawn - answered,
                                  shown_ms: shown - started, server_ms: body.timings_ms.total,
                                  layers: Object.keys(state.maps).length });
  await explained;
}

/** Opens a channel of any layer (a bar of section 5 names one): the blocks that hold it
 * opened, its maps asked for when they are not here yet (the card then opens as they
 * arrive: the queue's onLoaded). */
function openChannel(layer, index, focus) {
  blocks.reveal(layer);
  if (state.maps[layer]) return channel.show(layer, index, focus);
  state.selected = { layer, channel: index };
  maps.want([layer]);
  return Promise.resolve();
}

async function refresh() {
  const changed = await models.refresh(selectModel);
  // A version at the other precision loaded or unloaded: the int8 section and the channel's
  // side by side follow it.
  if (changed && state.meta) {
    const before = state.twin?.version;
    quantization.findTwin();
    if (state.twin?.version !== before) { state.twinMaps = {}; await quantization.render(); }
  }
  window.convscope.ready = true;
}

models.wire(guarded((name, version) => selectModel(name, version)));
quantization.wire(openChannel);
start.wire(look);
explanation.wire();
layers.wire({
  open: channel.show,
  redraw: ({ ranges }) => {
    blocks.redraw();
    if (ranges && state.selected && state.maps[state.selected.layer]) channel.show(state.selected.layer, state.selected.channel, false).catch(showError);
  },
});
blocks.wire({ want: (names) => maps.want(names), toggled: () => channel.place() });
key.wire(() => { models.forget(); refresh().catch(showError); });
refresh().catch(showError);
setInterval(() => { if (!askingForKey()) refresh().catch(showError); }, 5000);
