// Section 3, "Inside": every layer shallow to deep, one tile per channel, its channels paged
// and ordered by the controls (#shared: one colour range per layer; #order: most active
// first or by index). A click on a tile opens the channel (views/channel.mjs, through the
// handler given to `wire`).

import { cssGradient, level, put } from "../lib/colormap.mjs";
import { fmt } from "../lib/format.mjs";
import { geometryText } from "../lib/geometry.mjs";
import { channelOrder, firing, layerRange, pageOf } from "../lib/maps.mjs";
import { $, el, guarded, layerCard } from "../ui/dom.mjs";
import { layerInfo, state } from "../state.mjs";

export const PAGE = 64;  // channels per page

let pick = () => Promise.resolve();  // (layer, channel, focus) -> opens the channel

/** Whether every channel of a layer is painted on the layer's one range (#shared). */
export const sharedRange = () => $("shared").checked;

/** The channels of a layer shown in the overview, in the chosen order (#order, silent ones). */
export const channels = (layer) => channelOrder(state.maps[layer],
  { silent: Boolean(state.silent[layer]), byActivity: $("order").value === "active" });

function tileSize(h) { return h === 1 ? 22 : h >= 24 ? 56 : h >= 12 ? 46 : 38; }

/** Every layer's card, and the legend in the server's feature map colours. */
export function render() {
  $("inside").hidden = false;
  $("feature-ramp").style.background = cssGradient(state.colormaps.feature_maps.stops);
  $("layers").replaceChildren(...state.meta.layers.map((layer) => {
    const card = el("div", { class: "layer card", "data-layer": layer.name });
    fillLayer(card, layer);
    return card;
  }));
}

/** Shows the page of `layer` that holds `channel`, redrawing the card if that page is new. */
export function showPageOf(layer, channel) {
  const index = channels(layer).indexOf(channel);
  if (index >= 0 && Math.floor(index / PAGE) !== (state.pages[layer] || 0)) {
    state.pages[layer] = Math.floor(index / PAGE);
    fillLayer(layerCard(layer), layerInfo(layer));
  }
}

/** Marks the selected channel's tile (and no other) as pressed. */
export function markSelected() {
  const selected = state.selected;
  for (const t of document.querySelectorAll(".tile")) {
    const card = t.closest(".layer");
    t.setAttribute("aria-pressed", String(Boolean(selected) && card.dataset.layer === selected.layer
      && Number(t.dataset.channel) === selected.channel));
  }
}

function fillLayer(card, layer) {
  const map = state.maps[layer.name];
  const ordered = channels(layer.name);
  const { page, pages, shown } = pageOf(ordered, state.pages[layer.name], PAGE);
  const fired = firing(map);
  const shared = sharedRange() || map.h * map.w === 1;
  const [lo, hi] = layerRange(map);
  const size = tileSize(map.h);
  const head = el("div", { class: "layer-head" },
    el("b", { text: layer.name }), el("span", { text: `${layer.op}${layer.kind && layer.kind !== "other" ? ` (${layer.kind})` : ""}` }),
    el("span", { class: "geo", text: geometryText(layer) }),
    el("span", { class: "muted", text: `${fired} of ${map.c} fire on this image` }));
  if (fired < map.c) {
    const showing = Boolean(state.silent[layer.name]);
    head.append(el("button", { class: "silent-toggle", type: "button", "aria-pressed": String(showing),
      onclick: () => { state.silent[layer.name] = !showing; state.pages[layer.name] = 0; fillLayer(card, layer); } },
    showing ? `hide the ${map.c - fired} silent` : `show the ${map.c - fired} silent`));
  }
  if (ordered.length > PAGE) {
    const go = (to) => () => { state.pages[layer.name] = to; fillLayer(card, layer); card.querySelector(".tile")?.focus(); };
    head.append(el("span", { class: "pager" },
      el("button", { type: "button", disabled: page === 0, "aria-label": `${layer.name}: previous channels`, onclick: go(page - 1) }, "‹"),
      el("span", { text: `${page * PAGE + 1}–${Math.min(ordered.length, (page + 1) * PAGE)} of ${ordered.length}` }),
      el("button", { type: "button", disabled: page === pages - 1, "aria-label": `${layer.name}: next channels`, onclick: go(page + 1) }, "›")));
  }
  const url = sprite(map, shown, shared ? [lo, hi] : null);
  const height = size * map.h / map.w;
  const tiles = el("div", { class: "tiles" }, ...shown.map((channel, i) => {
    const silent = map.max[channel] <= 0;
    const selected = state.selected && state.selected.layer === layer.name && state.selected.channel === channel;
    const picture = el("span", { class: "tile-img", style: `width:${size}px;height:${height}px;background-image:url(${url});`
      + `background-size:${size * shown.length}px ${height}px;background-position:-${size * i}px 0` });
    return el("button", {
      class: `tile${silent ? " silent" : ""}`, type: "button", "aria-pressed": String(Boolean(selected)),
      "data-channel": channel, title: `channel ${channel}: max ${fmt(map.max[channel])}${silent ? " (silent on this image)" : ""}`,
      "aria-label": `${layer.name} channel ${channel}, max ${fmt(map.max[channel])}`,
      onclick: guarded(() => pick(layer.name, channel, true)),
    }, picture, el("span", { class: "n", text: channel }));
  }));
  card.replaceChildren(head, shown.length ? tiles : el("div", { class: "muted small", text: "No channel fires on this image." }));
}

// The page's tiles are painted side by side into one small picture, and each button shows
// its part of it: one image per layer to decode and composite instead of one canvas per
// channel (a third of the drawing time on AlexNet-small).
function sprite(map, shown, range) {
  if (!shown.length) return "";
  const canvas = el("canvas");
  canvas.width = shown.length * map.w; canvas.height = map.h;
  const ctx = canvas.getContext("2d"), table = state.colormaps.feature_maps.table;
  const image = ctx.createImageData(canvas.width, map.h);
  shown.forEach((channel, i) => {
    const [lo, hi] = range ?? [map.min[channel], map.max[channel]];
    for (let y = 0; y < map.h; y++) for (let x = 0; x < map.w; x++) {
      put(image.data, (y * canvas.width + i * map.w + x) * 4, table, level(map.data[(channel * map.h + y) * map.w + x], lo, hi));
    }
  });
  ctx.putImageData(image, 0, 0);
  return canvas.toDataURL();
}

/** Wires the controls: `redraw({ranges})` after a change of order, or of colour ranges
 * (`ranges` true: the open channel is painted again too); `open(layer, channel, focus)` when a
 * tile is clicked. */
export function wire({ redraw, open }) {
  pick = open;
  $("shared").addEventListener("change", () => { if (Object.keys(state.maps).length) redraw({ ranges: true }); });
  $("order").addEventListener("change", () => { state.pages = {}; if (Object.keys(state.maps).length) redraw({ ranges: false }); });
}
