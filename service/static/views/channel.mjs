// Section 3, one channel (the detail card under its layer): its map large and over the input
// with the receptive field of its strongest unit, the held-out images that excite it most
// (the channel view), and the filter that made it, trained and as training began. When the
// same model is served at the other precision too (an int8 version and its float version),
// the channel's float and int8 maps on this image side by side, on one colour range.

import { paths } from "../lib/api.mjs";
import { divergingLevel, fraction, level, put } from "../lib/colormap.mjs";
import { fmt, pct } from "../lib/format.mjs";
import { fieldAxes, receptiveBox, spatial } from "../lib/geometry.mjs";
import { boxPercent, upscale } from "../lib/layout.mjs";
import { channelRange, featureMaps, strongestUnit } from "../lib/maps.mjs";
import { int8Caption, keptFloatNote, severity, sqnr } from "../lib/quantization.mjs";
import { paint } from "../ui/canvas.mjs";
import { $, el, guarded, layerCard } from "../ui/dom.mjs";
import { client, getJSON, picture } from "../ui/server.mjs";
import { layerInfo, state } from "../state.mjs";
import { channels, markSelected, sharedRange, showPageOf } from "./layers.mjs";

let detail = null;  // the card, made from #detail-template on first use, kept while the page lives

const stillSelected = (layer, channel) => state.selected?.channel === channel && state.selected?.layer === layer.name;

/** Puts the card under its layer's card (or a closed block's strip of it), and closes it
 * when neither is on show (its block was closed). Moving a node that holds the focus would
 * drop it: it moves only when it must. */
export function place() {
  if (!detail || !state.selected) return;
  const card = layerCard(state.selected.layer);
  if (!card) { close(); return; }
  if (card.nextElementSibling !== detail) card.after(detail);
}

/** Closes the card and gives the focus back to the channel's tile. */
export function close() {
  const was = state.selected;
  state.selected = null;
  if (detail) detail.remove();
  markSelected();
  if (was) layerCard(was.layer)?.querySelector(`.tile[data-channel="${was.channel}"]`)?.focus();
}

/** The channel `delta` places away in the overview's order (wrapping), on its page. */
function step(delta) {
  const { layer, channel } = state.selected;
  const ordered = channels(layer);
  if (!ordered.length) return Promise.resolve();
  const next = ordered[(ordered.indexOf(channel) + delta + ordered.length) % ordered.length];
  showPageOf(layer, next);
  return show(layer, next, false);
}

function make() {
  const card = $("detail-template").content.firstElementChild.cloneNode(true);
  card.querySelector(".prev").addEventListener("click", guarded(() => step(-1)));
  card.querySelector(".next").addEventListener("click", guarded(() => step(1)));
  card.querySelector(".close").addEventListener("click", close);
  card.addEventListener("keydown", (e) => {
    if (e.key === "Escape") close();
    else if (e.key === "ArrowLeft" && e.target.tagName !== "SELECT") guarded(() => step(-1))();
    else if (e.key === "ArrowRight" && e.target.tagName !== "SELECT") guarded(() => step(1))();
  });
  return card;
}

/** Opens channel `channel` of layer `layerName`; `focus`: move the focus and scroll to it. */
export async function show(layerName, channel, focus) {
  const layer = layerInfo(layerName), map = state.maps[layerName];
  state.selected = { layer: layerName, channel };
  markSelected();
  if (!detail) detail = make();
  detail.setAttribute("aria-label", `${layerName} channel ${channel}`);
  detail.querySelector(".detail-title").textContent = `${layerName} · channel ${channel} of ${map.c}`;
  place();
  drawOnImage(layer, map, channel);
  const filterDone = renderFilter(detail.querySelector(".filter-body"), layer, channel);
  const topDone = renderTop(detail.querySelector(".top-body"), layer, channel);
  const twinDone = renderTwin(layer, map, channel);
  if (focus) detail.querySelector(".next").focus({ preventScroll: true });
  if (focus) detail.scrollIntoView({ block: "nearest", behavior: "smooth" });
  await Promise.all([filterDone, topDone, twinDone]);
}

// The twin version's maps of one layer on this image: one predict asking for that layer only,
// when a channel of it is first opened (cached until the image or the model changes).
function twinMaps(layer) {
  if (!state.twinMaps[layer]) {
    const image = state.image;
    const made = client.request(paths.predict(state.twin.base, 1, [layer]),
      { method: "POST", body: image, headers: { "Content-Type": image.type || "application/octet-stream" } })
      .then((response) => response.json())
      .then((body) => featureMaps(body.feature_maps, state.meta.layers)[layer]);
    made.catch(() => { if (state.twinMaps[layer] === made) delete state.twinMaps[layer]; });
    state.twinMaps[layer] = made;
  }
  return state.twinMaps[layer];
}

// The channel in float and in int8 on this image, on one colour range, and their error.
async function renderTwin(layer, map, channel) {
  const box = detail.querySelector(".twin");
  const twin = state.twin, meta = state.meta;
  if (!twin || !state.image || map.h * map.w === 1) { box.hidden = true; return; }
  const other = await twinMaps(layer.name);
  if (!stillSelected(layer, channel) || meta !== state.meta || !other) return;
  const slice = (m) => m.data.subarray(channel * m.h * m.w, (channel + 1) * m.h * m.w);
  const [floatMap, int8Map] = twin.precision === "int8" ? [map, other] : [other, map];
  const [floatVersion, int8Version] = twin.precision === "int8" ? [meta.version, twin.version] : [twin.version, meta.version];
  const lo = Math.min(floatMap.min[channel], int8Map.min[channel]), hi = Math.max(floatMap.max[channel], int8Map.max[channel]);
  const table = state.colormaps.feature_maps.table;
  paint(box.querySelector(".twin-float"), slice(floatMap), map.h, map.w, lo, hi, table);
  paint(box.querySelector(".twin-int8"), slice(int8Map), map.h, map.w, lo, hi, table);
  box.querySelector(".twin-float-cap").textContent = `float32 · v${floatVersion}`;
  box.querySelector(".twin-int8-cap").textContent = int8Caption(int8Version, layer.name,
    state.quantization?.float_layers);
  // Where they differ: int8 minus float on the filters' diverging map (grey: none).
  const a = slice(floatMap), b = slice(int8Map), difference = new Float32Array(a.length);
  let peak = 1e-12;
  for (let i = 0; i < a.length; i++) { difference[i] = b[i] - a[i]; peak = Math.max(peak, Math.abs(difference[i])); }
  paint(box.querySelector(".twin-diff"), difference, map.h, map.w, -peak, peak, state.colormaps.filters.table);
  box.querySelector(".twin-diff-cap").textContent = `int8 − float (±${fmt(peak)})`;
  const db = sqnr(a, b);
  const row = state.quantization?.layers.find((r) => r.name === layer.name);
  const silent = floatMap.max[channel] <= 0 && int8Map.max[channel] <= 0;
  box.querySelector(".twin-note").textContent = (silent ? "Silent in both on this image."
    : db === null ? "Identical on this image." : db === -Infinity
    ? "Silent in float, not in int8, on this image."
    : `On this image the int8 map is ${db.toFixed(1)} dB from the float one (${severity(db)}).`)
    + (row ? ` The layer over the held-out images: ${row.sqnr_db === null ? "identical" : `${row.sqnr_db.toFixed(1)} dB`}`
      + (row.worst_channel === channel ? "; this is its worst channel there." : ".") : "")
    + keptFloatNote(layer.name, state.quantization?.float_layers)
    + " One colour range for both; the difference in blue (int8 lower) and red (int8 higher).";
  box.hidden = false;
}

// The map large, and over the input with the receptive field of its strongest unit.
function drawOnImage(layer, map, channel) {
  const values = map.data.subarray(channel * map.h * map.w, (channel + 1) * map.h * map.w);
  const [lo, hi] = channelRange(map, channel, sharedRange());
  const table = state.colormaps.feature_maps.table;
  paint(detail.querySelector(".map"), values, map.h, map.w, lo, hi, table);
  const [H, W] = state.meta.input.size;
  const scale = upscale(H, W);
  const canvas = detail.querySelector(".map-overlay");
  canvas.width = W * scale; canvas.height = H * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(state.input, 0, 0, W * scale, H * scale);
  // heat: each input pixel takes the unit whose cell covers it (the map stretched over the input)
  const heat = el("canvas", { width: W, height: H }), hctx = heat.getContext("2d");
  const image = hctx.createImageData(W, H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const v = values[Math.min(map.h - 1, Math.floor(y * map.h / H)) * map.w + Math.min(map.w - 1, Math.floor(x * map.w / W))];
    const f = fraction(v, lo, hi);  // the heat fades with the value: no evidence, the image as it is
    put(image.data, (y * W + x) * 4, table, Math.round(f * 255), Math.round(255 * 0.7 * f));
  }
  hctx.putImageData(image, 0, 0);
  ctx.drawImage(heat, 0, 0, W * scale, H * scale);
  const { y, x } = strongestUnit(values, map.w);
  const box = receptiveBox(layer, y, x, [H, W]);
  let where = "";
  if (box) {
    const { left, top, right, bottom } = box;
    const axes = fieldAxes(layer);  // null: not a map (a global pool's C x 1 x 1), its box the whole image
    const field = axes
      ? `a ${axes[0].rf}×${axes[1].rf} px receptive field, ${axes[0].stride === axes[1].stride ? axes[0].stride
        : `${axes[0].stride} (rows) and ${axes[1].stride} (columns)`} px between neighbouring units.`
      : "the whole image.";
    ctx.strokeStyle = "#ff4040"; ctx.lineWidth = 2;
    ctx.strokeRect(left * scale + 1, top * scale + 1, (right - left) * scale - 2, (bottom - top) * scale - 2);
    where = ` Its strongest unit, at row ${y}, column ${x} of the ${map.h}×${map.w} map, sees input rows ${top}–${bottom - 1}, `
      + `columns ${left}–${right - 1} (red box): ${field}`;
  }
  detail.querySelector(".map-note").textContent = map.max[channel] <= 0
    ? "This channel is silent on this image (nothing above zero)."
    : `Max ${fmt(map.max[channel])}.${where}`;
}

// The filter that made the channel: as trained and when training began.
async function renderFilter(box, layer, channel) {
  if (!layer.weight) {
    const index = state.meta.layers.indexOf(layer);
    const before = state.meta.layers[index - 1];
    box.replaceChildren(el("div", { class: "muted filter-note", text: layer.kind === "pool"
      ? `A pooling layer has no filters: channel ${channel} here keeps the strongest response of each window of `
        + `channel ${channel}${before ? ` of ${before.name}` : ""}, at a lower resolution, so small shifts matter less.`
      : "This layer has no filters of its own." }));
    return;
  }
  const body = await getJSON(paths.filter(state.base, layer.name, channel));
  if (!stillSelected(layer, channel)) return;
  const [cin, kh, kw] = body.shape;
  const what = body.reads_image
    ? `a ${kh}×${kw} filter over the image${cin === 3 ? " (in colour: grey = 0)" : ""}`
    : `a ${kh}×${kw} filter over each of the ${cin} channels of the layer before: it combines their patterns`;
  const pair = (draw) => el("div", { class: "filter-pair" },
    el("figure", {}, el("figcaption", { text: "after training" }), draw(body.trained)),
    body.initial ? el("figure", {}, el("figcaption", { text: "before (random)" }), draw(body.initial)) : null);
  const note = el("div", { class: "muted small filter-note", text: `${body.conv}: ${what}.` });
  if (body.reads_image || cin <= 3) {
    box.replaceChildren(pair((k) => kernelCanvas(k, cin === 3 && body.reads_image)), note);
    return;
  }
  const more = el("button", { type: "button", text: `show its ${cin} kernels` });
  more.addEventListener("click", () => {
    more.replaceWith(pair((k) => kernelGrid(k)));
    note.textContent += " One small kernel per input channel (blue: negative, red: positive weights).";
  });
  box.replaceChildren(note, more);
}

const peakOf = (kernel) => Math.max(1e-12, ...kernel.flat(2).map(Math.abs));

// One kernel [C][kh][kw]: colour for 3 channels (grey = 0), else the filters' diverging map.
function kernelCanvas(kernel, colour) {
  const kh = kernel[0].length, kw = kernel[0][0].length, peak = peakOf(kernel);
  const canvas = el("canvas", { width: kw, height: kh, style: `width:${Math.max(72, kw * 16)}px;height:${Math.max(72, kh * 16) * kh / kw}px` });
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(kw, kh), table = state.colormaps.filters.table;
  for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    const i = (y * kw + x) * 4;
    if (colour) {
      for (let c = 0; c < 3; c++) image.data[i + c] = 255 * Math.min(1, Math.max(0, 0.5 + kernel[c][y][x] / (2 * peak)));
      image.data[i + 3] = 255;
    } else put(image.data, i, table, divergingLevel(kernel[0][y][x], peak));
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// Every input channel's kernel of one filter, tiled, on one range (0 = the map's middle).
function kernelGrid(kernel) {
  const cin = kernel.length, kh = kernel[0].length, kw = kernel[0][0].length, peak = peakOf(kernel);
  const cols = Math.ceil(Math.sqrt(cin)), rows = Math.ceil(cin / cols);
  const W = cols * (kw + 1) + 1, H = rows * (kh + 1) + 1;
  const canvas = el("canvas", { width: W, height: H });
  const scale = Math.max(2, Math.floor(260 / W));
  canvas.style.width = `${W * scale}px`; canvas.style.height = `${H * scale}px`;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(W, H), table = state.colormaps.filters.table;
  image.data.fill(255);
  for (let c = 0; c < cin; c++) {
    const ox = 1 + (c % cols) * (kw + 1), oy = 1 + Math.floor(c / cols) * (kh + 1);
    for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
      put(image.data, ((oy + y) * W + ox + x) * 4, table, divergingLevel(kernel[c][y][x], peak));
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// The channel view: the held-out images (or patches) that excite this channel most.
async function renderTop(box, layer, channel) {
  if (!state.meta.channel_view) {
    box.replaceChildren(el("div", { class: "muted filter-note", text: "Not computed for this model version. Export it again "
      + "(python -m model_export … ranks held-out images by default), or import it with --data-dir DIR." }));
    detail.querySelector(".top-note").textContent = "";
    return;
  }
  const body = await getJSON(paths.channel(state.base, layer.name, channel));
  if (!stillSelected(layer, channel)) return;
  const [H, W] = state.meta.input.size;
  const loads = [];
  box.replaceChildren(...body.top.map((entry) => {
    const img = el("img", { alt: `held-out ${entry.label}, activation ${fmt(entry.activation)}` });
    loads.push(picture(entry.image_url).then((url) => new Promise((resolve) => {
      img.onload = resolve; img.onerror = resolve; img.src = url;
    })));
    const frame = el("div", { class: `frame${entry.crop ? " crop" : ""}` }, img);
    const b = entry.box;
    let where = "";
    if (b && !entry.crop) {  // the whole image, its unit's receptive field boxed (rows and columns may differ)
      const p = boxPercent(b, [H, W]);
      frame.append(el("div", { class: "box", style: `left:${p.left}%;top:${p.top}%;width:${p.width}%;height:${p.height}%` }));
      where = `: its strongest unit sees columns ${b.left}–${b.right - 1}, rows ${b.top}–${b.bottom - 1} (the box)`;
    } else if (b) {  // stored as the patch itself: the picture is the receptive field
      where = `: the ${b.right - b.left}×${b.bottom - b.top} px patch its strongest unit sees (columns ${b.left}–${b.right - 1}, `
        + `rows ${b.top}–${b.bottom - 1})`;
    }
    return el("div", { class: "patch", title: `held-out image ${entry.image}: ${entry.label}, max ${fmt(entry.activation)}${where}` },
      frame, el("div", { class: "cap" }, el("span", { text: entry.score != null ? `${entry.label} ${pct(entry.score)}` : entry.label }),
        el("span", { class: "muted", text: fmt(entry.activation) })));
  }));
  const crops = body.top.filter((e) => e.crop).length, boxed = body.top.filter((e) => e.box && !e.crop).length;
  const view = state.meta.channel_view;
  detail.querySelector(".top-note").textContent = [
    `The ${body.top.length} of ${body.images} ${view.captions === "predictions" ? "images" : "held-out images"} where it fires most, strongest first`,
    boxed ? `red box: the input pixels its strongest unit sees there (its receptive field${fieldAxes(layer)
      ? `, ${fieldAxes(layer)[0].rf}×${fieldAxes(layer)[1].rf} px, clipped at the edges` : ""})` : null,
    crops ? `${crops === body.top.length ? "each" : `${crops} of them`} stored as that patch alone (the field is small beside the image)` : null,
    view.captions === "predictions" ? "captions: the model's own top class and its probability (the folder has no labels)" : null,
  ].filter(Boolean).join("; ") + ".";
  await Promise.all(loads);
}
