// convscope explorer: overview first, detail on demand. Everything comes from this server
// (no CDN, no bundler, works offline): ES modules served as they are.
//
//   lib/      pure modules, no DOM and no page state, tested by node's test runner
//             (tests/service/static/): api (the client and every path), npy (the .npy reader),
//             colormap (the server's colour maps as tables), geometry, maps, format
//   ui/       the browser's side of them: dom helpers, canvas painting, the bound API client
//   state.mjs what the page knows, documented where it is defined
//   views/    one module per part of the page: key (the API key prompt), models (pickers and
//             summary), start (1: samples, file, drop), prediction and explanation (2), layers
//             and channel (3), network (4), quantization (5: int8 and float)
//   this file the controller: which view draws when a model or an image is chosen.
//
// A new view (a block overview of a deep net, a quantized version beside its float one) is a
// module in views/ with a render function reading `state`, called below from selectModel
// (what depends on the model only) or look (what depends on the image).
//
// Feature maps arrive as float16 .npy in one request and are drawn here, one sprite per layer,
// so the page costs one predict per image; pictures (samples, top images, filters) are fetched
// with the API key when the server needs one and cached by URL.

import { paths } from "./lib/api.mjs";
import { featureMaps } from "./lib/maps.mjs";
import { clearError, guarded, painted, showError } from "./ui/dom.mjs";
import { askingForKey, client, getJSON } from "./ui/server.mjs";
import { setCatalogue, showModel, state } from "./state.mjs";
import * as channel from "./views/channel.mjs";
import * as explanation from "./views/explanation.mjs";
import * as key from "./views/key.mjs";
import * as layers from "./views/layers.mjs";
import * as models from "./views/models.mjs";
import * as network from "./views/network.mjs";
import * as prediction from "./views/prediction.mjs";
import * as quantization from "./views/quantization.mjs";
import * as start from "./views/start.mjs";

// Timings the page records for itself (read by benchmarks/explorer_screenshots.py).
window.convscope = { timings: [], ready: false };

/** Shows a model version (its default when `version` is not given), and the image on show
 * again through it. */
async function selectModel(name, version) {
  clearError();
  const meta = await getJSON(paths.model(name, version));
  showModel(meta, paths.versionPath(meta.name, meta.version));
  models.showSummary(meta);
  quantization.findTwin();
  network.render();
  setCatalogue(await getJSON(paths.catalogue(meta.name, meta.version)));
  explanation.renderMethods();
  await quantization.render();
  await start.renderSamples(look);
  if (state.image) await look(state.image, state.imageName);
}

/** Looks at an image: one predict for the classes and every layer's maps, then the overview,
 * then the explanation. */
async function look(blob, name) {
  clearError();
  state.image = blob; state.imageName = name;
  const started = performance.now();
  const meta = state.meta;
  explanation.clearTargets();
  const [response, input] = await Promise.all([
    client.request(paths.predict(state.base, meta.labels.length),
      { method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" } }),
    prediction.modelView(blob, meta.input),
  ]);
  const body = await response.json();
  if (meta !== state.meta) return;  // the model changed meanwhile
  const answered = performance.now();

  state.input = input;
  state.probabilities = body.predictions;
  state.maps = featureMaps(body.feature_maps, meta.layers);
  state.twinMaps = {};
  prediction.render(body.timings_ms, answered - started);
  explanation.renderTargets();
  drawLayers();
  quantization.redraw();
  if (state.selected && state.maps[state.selected.layer]) await channel.show(state.selected.layer, state.selected.channel, false);
  await painted();
  const drawn = performance.now();
  // The explanation (a hundred forward passes and more for the perturbation methods) starts
  // once the overview is drawn: started with the prediction, it slowed both down on a small
  // machine where the browser and the server share the cores (benchmarks/README.md).
  const explained = explanation.explain();
  window.convscope.timings.push({ what: "image", model: meta.name, predict_ms: answered - started, draw_ms: drawn - answered,
                                  server_ms: body.timings_ms.total });
  await explained;
}

/** The overview, with the open channel's card back under its layer. */
function drawLayers() {
  layers.render();
  channel.place();
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
quantization.wire(channel.show);
start.wire(look);
explanation.wire();
layers.wire({
  open: channel.show,
  redraw: ({ ranges }) => {
    drawLayers();
    if (ranges && state.selected) channel.show(state.selected.layer, state.selected.channel, false).catch(showError);
  },
});
key.wire(() => { models.forget(); refresh().catch(showError); });
refresh().catch(showError);
setInterval(() => { if (!askingForKey()) refresh().catch(showError); }, 5000);
