// Section 3, "Inside": the overview, shallow to deep. A network with blocks (layers with a
// `group`: a ResNet's residual blocks, a DenseNet's dense layers) shows one row per block
// (lib/blocks.mjs): its name, what it holds, the shape and field of its output and that
// output's strongest channels on one line; a block opens to every layer's card (and closes).
// A chain (TinyVGG, AlexNet) shows every layer's card, as it always did.
//
// Each card or strip asks for its layer's maps when it comes near the screen (`want`, given
// to wire; lib/plan.mjs batches the asks), so a deep net's maps come as they are looked at
// and a closed block's inner layers are never asked for.

import { kindSummary, rowPath } from "../lib/blocks.mjs";
import { cssGradient } from "../lib/colormap.mjs";
import { geometryText, shortGeometryText } from "../lib/geometry.mjs";
import { nearScreen } from "../lib/layout.mjs";
import { $, el } from "../ui/dom.mjs";
import { layerInfo, state } from "../state.mjs";
import * as layers from "./layers.mjs";

/** Cards this close to the screen (px) ask for their maps. */
const NEAR_PX = 300;

let want = () => {};  // (layer names) -> their maps are asked for
let toggled = () => {};  // after a block opens or closes
let observer = null;

/** Wires the overview: `want(names)` is called with the layers of the cards coming near the
 * screen; `toggled()` after a block opens or closes. */
export function wire(handlers) {
  want = handlers.want;
  toggled = handlers.toggled;
  observer = new IntersectionObserver((entries) => {
    const names = entries.filter((e) => e.isIntersecting && e.target.classList.contains("waiting"))
      .map((e) => e.target.dataset.layer);
    if (names.length) want(names);
  }, { rootMargin: `${NEAR_PX}px 0px` });
}

let builtFor = null;  // the model version the overview was built for

/** The overview, for an image about to be looked at: built once per model version (rows or
 * cards; a closed block's strip, an open one's cards), then every card marked as waiting
 * for the new image's maps (the old pictures dimmed meanwhile). Returns the layers of the
 * cards near the screen, in page order: what to ask for first. */
export function show() {
  $("inside").hidden = false;
  if (builtFor !== state.meta) build();
  for (const target of document.querySelectorAll("#layers .layer")) target.classList.add("waiting");
  return observe();
}

function build() {
  builtFor = state.meta;
  $("feature-ramp").style.background = cssGradient(state.colormaps.feature_maps.stops);
  $("inside-h").textContent = state.blocks ? "3 · Inside: block by block, shallow to deep" : "3 · Inside: every layer, shallow to deep";
  $("blocks-note").hidden = !state.blocks;
  const box = $("layers");
  box.classList.toggle("blocks", state.blocks);
  box.replaceChildren(...(state.blocks ? state.rows.map(blockRow) : state.meta.layers.map(layers.card)));
  redraw();  // laid out now: the strips know their width
}

/** The cards and strips of these layers, drawn again now that their maps are here. */
export function update(names) {
  for (const name of names) {
    for (const target of document.querySelectorAll(`#layers .layer[data-layer="${CSS.escape(name)}"]`)) {
      if (!target.closest("[hidden]")) layers.fill(target);
    }
  }
}

/** Every card and strip on show drawn again (the controls changed, the width did). */
export function redraw() {
  for (const target of document.querySelectorAll("#layers .layer")) if (!target.closest("[hidden]")) layers.fill(target);
}

/** Asks at once for the maps of the cards near the screen (as laid out now) and returns
 * their layers, then watches every card: an observer's first report comes a frame later,
 * and the first screen's requests should go out with the image. Called again when the
 * layout above the overview changed. */
export function observe() {
  observer.disconnect();
  const cards = [...document.querySelectorAll("#layers .layer")].filter((c) => !c.closest("[hidden]"));
  const height = window.innerHeight;
  const near = [...new Set(cards.filter((c) => c.classList.contains("waiting") && nearScreen(c.getBoundingClientRect(), height, NEAR_PX))
    .map((c) => c.dataset.layer))];
  want(near);
  for (const c of cards) observer.observe(c);
  return near;
}

const domId = (row) => `block-${[...row.id].map((ch) => (/[A-Za-z0-9_-]/.test(ch) ? ch : "_")).join("")}`;

/** What a row holds, in a few words. */
function holds(row) {
  if (row.children) {  // a dense block's dense layers, and its own closing Concat
    const blocks = row.children.filter((r) => r.block).length, more = row.children.length - blocks;
    return `${blocks} blocks${more ? ` + ${more} layer${more > 1 ? "s" : ""}` : ""} · ${row.layers.length} layers`;
  }
  if (row.block) return `${row.layers.length} layers: ${kindSummary(row.layers.map(layerInfo))}`;
  const output = layerInfo(row.output);
  return `${output.op}${output.kind && output.kind !== "other" ? ` (${output.kind})` : ""}`;
}

/** An open row's contents: a stage's rows, a block's layers' cards. */
const inside = (row) => (row.children ? row.children.map(blockRow) : row.layers.map((n) => layers.card(layerInfo(n))));

const toggleTitle = (row, open) => (open ? `close ${row.title}`
  : `open ${row.title}: ${row.children ? "its blocks" : row.block ? "its layers" : "every channel"}`);

function blockRow(row) {
  const output = layerInfo(row.output);
  const open = Boolean(state.open[row.id]);
  const strip = layers.strip(output);
  strip.hidden = open;
  const inner = el("div", { class: `block-layers${row.children ? " stage" : ""}`, id: domId(row), hidden: !open },
    ...(open ? inside(row) : []));
  const block = el("div", { class: `block${row.children ? " stage" : ""}`, "data-block": row.id, "data-open": String(open) });
  const toggle = el("button", {
    class: "block-toggle", type: "button", "aria-expanded": String(open), "aria-controls": domId(row),
    title: toggleTitle(row, open), onclick: () => toggleRow(row, block),
  }, el("span", { class: "chevron", "aria-hidden": "true", text: open ? "▾" : "▸" }), el("b", { text: row.title }));
  block.append(
    el("div", { class: "block-info" }, toggle,
      el("div", { class: "muted small", text: holds(row), title: `output: ${output.name}` }),
      el("div", { class: "muted small geo", text: shortGeometryText(output), title: geometryText(output) })),
    strip, inner);
  return block;
}

/** Opens a closed row (its blocks or its layers' cards, which ask for their maps as they
 * come near the screen) or closes an open one (its strip back). */
function toggleRow(row, block) {
  const open = !state.open[row.id];
  state.open[row.id] = open;
  const toggle = block.querySelector(":scope > .block-info .block-toggle"), inner = block.querySelector(":scope > .block-layers");
  toggle.setAttribute("aria-expanded", String(open));
  toggle.querySelector(".chevron").textContent = open ? "▾" : "▸";
  toggle.title = toggleTitle(row, open);
  block.dataset.open = String(open);
  inner.replaceChildren(...(open ? inside(row) : []));
  inner.hidden = !open;
  const strip = block.querySelector(":scope > .strip");
  strip.hidden = open;
  for (const target of [strip, ...inner.querySelectorAll(".layer")]) if (!target.closest("[hidden]")) layers.fill(target);
  observe();
  toggled();
}

/** Opens the rows that hold `layer` (a stage, then its block), so its card is on the page. */
export function reveal(layer) {
  let rows = state.rows;
  for (const id of rowPath(state.rows, layer)) {
    const row = rows.find((r) => r.id === id);
    const block = document.querySelector(`#layers .block[data-block="${CSS.escape(id)}"]`);
    if (row && block && !state.open[id]) toggleRow(row, block);
    rows = row?.children ?? [];
  }
}

let resized = null;
window.addEventListener("resize", () => {  // the strips hold as many tiles as fit
  clearTimeout(resized);
  resized = setTimeout(() => { if (state.meta && !$("inside").hidden) redraw(); }, 150);
});
