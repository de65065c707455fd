// Section 3's pictures of one layer: its card (every channel as a tile, paged and ordered by
// the controls: #shared, one colour range per layer; #order, most active first or by index)
// and a closed block's strip (its output's strongest channels, one line). The rows that hold
// them are views/blocks.mjs's. A click on a tile opens the channel (views/channel.mjs,
// through the handler given to `wire`).

import { level, put } from "../lib/colormap.mjs";
import { fmt } from "../lib/format.mjs";
import { geometryText } from "../lib/geometry.mjs";
import { sampleIndex, samples, STRIP_TILE, stripCount, tileSize } from "../lib/layout.mjs";
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

/** A layer's card, empty: `fill` draws it once it is in the page. */
export const card = (layer) => el("div", { class: "layer card waiting", "data-layer": layer.name });

/** A closed block's strip of its output layer's strongest channels, on one line; empty:
 * `fill` draws it once it is in the page (it holds as many as its width allows). */
export const strip = (layer) => el("div", { class: "layer strip waiting", "data-layer": layer.name });

/** Draws a card or strip from the maps there are now: a placeholder (about its height, so
 * the page does not jump when they come) until its layer's are here. */
export function fill(target) {
  const layer = layerInfo(target.dataset.layer);
  if (!state.maps[layer.name]) {
    target.classList.add("waiting");
    if (target.querySelector(".tiles")) return;  // the last image's, dimmed, until this one's come
    target.replaceChildren(target.classList.contains("strip") ? el("span", { class: "muted small", text: "…" })
      : el("div", { class: "layer-head" }, el("b", { text: layer.name }), el("span", { class: "geo", text: geometryText(layer) }),
        el("span", { class: "muted", text: "loading…" })));
    return;
  }
  target.classList.remove("waiting");
  if (target.classList.contains("strip")) fillStrip(target, layer);
  else fillCard(target, layer);
}

/** Shows the page of `layer` that holds `channel`, redrawing the card if that page is new. */
export function showPageOf(layer, channel) {
  const index = channels(layer).indexOf(channel);
  const target = layerCard(layer);
  if (target?.classList.contains("card") && index >= 0 && Math.floor(index / PAGE) !== (state.pages[layer] || 0)) {
    state.pages[layer] = Math.floor(index / PAGE);
    fill(target);
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

function fillCard(target, layer) {
  const map = state.maps[layer.name];
  const ordered = channels(layer.name);
  const { page, pages, shown } = pageOf(ordered, state.pages[layer.name], PAGE);
  const fired = firing(map);
  const size = tileSize(map.h);
  const head = el("div", { class: "layer-head" },
    el("b", { text: layer.name }), el("span", { text: `${layer.op}${layer.kind && layer.kind !== "other" ? ` (${layer.kind})` : ""}` }),
    el("span", { class: "geo", text: geometryText(layer) }),
    el("span", { class: "muted", text: `${fired} of ${map.c} fire on this image` }));
  if (fired < map.c) {
    const showing = Boolean(state.silent[layer.name]);
    head.append(el("button", { class: "silent-toggle", type: "button", "aria-pressed": String(showing),
      onclick: () => { state.silent[layer.name] = !showing; state.pages[layer.name] = 0; fill(target); } },
    showing ? `hide the ${map.c - fired} silent` : `show the ${map.c - fired} silent`));
  }
  if (ordered.length > PAGE) {
    const go = (to) => () => { state.pages[layer.name] = to; fill(target); target.querySelector(".tile")?.focus(); };
    head.append(el("span", { class: "pager" },
      el("button", { type: "button", disabled: page === 0, "aria-label": `${layer.name}: previous channels`, onclick: go(page - 1) }, "‹"),
      el("span", { text: `${page * PAGE + 1}–${Math.min(ordered.length, (page + 1) * PAGE)} of ${ordered.length}` }),
      el("button", { type: "button", disabled: page === pages - 1, "aria-label": `${layer.name}: next channels`, onclick: go(page + 1) }, "›")));
  }
  target.replaceChildren(head, shown.length ? tiles(layer, map, shown, size)
    : el("div", { class: "muted small", text: "No channel fires on this image." }));
}

function fillStrip(target, layer) {
  const map = state.maps[layer.name];
  const ordered = channels(layer.name);
  // as many as fit the strip's width (its column of the row; a guess before it is laid out)
  const shown = ordered.slice(0, stripCount(target.clientWidth || 900));
  target.replaceChildren(shown.length ? tiles(layer, map, shown, STRIP_TILE)
    : el("span", { class: "muted small", text: "No channel fires on this image." }));
}

function tiles(layer, map, shown, size) {
  const shared = sharedRange() || map.h * map.w === 1;
  const url = sprite(map, shown, shared ? layerRange(map) : null, size);
  const height = size * map.h / map.w;
  return el("div", { class: "tiles" }, ...shown.map((channel, i) => {
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
}

// The page's tiles are painted side by side into one small picture, and each button shows
// its part of it: one image per layer to decode and composite instead of one canvas per
// channel (a third of the drawing time on AlexNet-small). Each tile is painted at the size
// it is shown (nearest value, as the pixelated full map would look): a 112 x 112 map in a
// 40 px tile costs an eighth of the pixels to paint and encode.
function sprite(map, shown, range, size) {
  if (!shown.length) return "";
  const ratio = window.devicePixelRatio || 1;
  const tw = samples(map.w, size, ratio), th = samples(map.h, size * map.h / map.w, ratio);
  const xs = sampleIndex(map.w, tw), ys = sampleIndex(map.h, th);
  const canvas = el("canvas");
  canvas.width = shown.length * tw; canvas.height = th;
  const ctx = canvas.getContext("2d"), table = state.colormaps.feature_maps.table;
  const image = ctx.createImageData(canvas.width, th);
  shown.forEach((channel, i) => {
    const [lo, hi] = range ?? [map.min[channel], map.max[channel]];
    const base = channel * map.h * map.w;
    for (let y = 0; y < th; y++) {
      const row = base + ys[y] * map.w;
      for (let x = 0; x < tw; x++) put(image.data, (y * canvas.width + i * tw + x) * 4, table, level(map.data[row + xs[x]], lo, hi));
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
