// convscope explorer: overview first, detail on demand. Everything comes from this
// server (no CDN, works offline). Feature maps arrive as float16 .npy in one request
// and are drawn here, one small canvas per channel, so the page costs one predict per
// image; pictures (samples, top images, filters) are fetched with the API key when the
// server needs one and cached by URL (the versioned URLs are immutable on the server).
"use strict";

const $ = (id) => document.getElementById(id);
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}
const fmt = (v) => (Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3));
const pct = (p) => (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";

// Timings the page records for itself (read by benchmarks/explorer_screenshots.py).
window.convscope = { timings: [], ready: false };

// ---------------------------------------------------------------- the API -----------

// With API keys on the server, every call carries `Authorization: Bearer <key>`. The key
// lives in this tab's sessionStorage only, never in a URL or a cookie.
function headers(extra) {
  const key = sessionStorage.getItem("convscope-key");
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

class ApiError extends Error {
  constructor(status, message) { super(`${status}: ${message}`); this.status = status; this.detail = message; }
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    $("keyform").hidden = false;
    throw new ApiError(401, "this server needs an API key; enter one above");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  return response;
}
const getJSON = async (path) => (await api(path)).json();

// Pictures by URL -> object URL, fetched once (with the key) and kept for the page's life.
const pictures = new Map();
function picture(path) {
  if (!pictures.has(path)) {
    const made = api(path).then((r) => r.blob()).then((b) => URL.createObjectURL(b));
    made.catch(() => pictures.delete(path));
    pictures.set(path, made);
  }
  return pictures.get(path);
}

function showError(error) {
  if (error && error.name === "AbortError") return;
  $("error").textContent = error instanceof Error ? error.message : String(error);
}
const guarded = (fn) => (...args) => Promise.resolve().then(() => fn(...args)).catch(showError);

// ---------------------------------------------------------------- numbers -----------

// A .npy file (version 1-3, little-endian float16/float32, C order) as a Float32Array.
let halfTable = null;
function halfToFloat() {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    halfTable[h] = exp === 0 ? sign * 2 ** -14 * (frac / 1024)
      : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return halfTable;
}

function parseNpy(base64) {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  if (bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") throw new Error("not a .npy file");
  const view = new DataView(bytes.buffer);
  const long = bytes[6] >= 2;
  const headerLength = long ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = (long ? 12 : 10) + headerLength;
  const header = new TextDecoder().decode(bytes.subarray(long ? 12 : 10, start));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const body = bytes.slice(start).buffer;  // a copy: aligned for the typed arrays
  let data;
  if (descr === "<f4") data = new Float32Array(body);
  else if (descr === "<f2") {
    const half = new Uint16Array(body), table = halfToFloat();
    data = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) data[i] = table[half[i]];
  } else throw new Error(`unsupported .npy dtype ${descr}`);
  return { shape, data };
}

// Colour maps as stops, interpolated to 256 entries (the server's own, service/encoding.py).
const STOPS = {
  viridis: [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]],
  coolwarm: [[59, 76, 192], [141, 176, 254], [221, 221, 221], [244, 154, 123], [180, 4, 38]],
};
const LUTS = {};
function lut(name) {
  if (LUTS[name]) return LUTS[name];
  const stops = STOPS[name], table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1), k = Math.min(Math.floor(x), stops.length - 2), t = x - k;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * t;
  }
  return (LUTS[name] = table);
}

// values (h*w) -> the canvas's pixels, lo..hi across the colour map.
function paint(canvas, values, h, w, lo, hi, map = "viridis") {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(w, h), table = lut(map);
  const span = hi > lo ? hi - lo : 1;
  for (let i = 0; i < h * w; i++) {
    const level = Math.max(0, Math.min(255, Math.round(((values[i] - lo) / span) * 255))) * 3;
    image.data[i * 4] = table[level]; image.data[i * 4 + 1] = table[level + 1];
    image.data[i * 4 + 2] = table[level + 2]; image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// ---------------------------------------------------------------- state -------------

const state = {
  meta: null,        // GET /v1/models/{name}/versions/{v}
  base: "",          // /v1/models/{name}/versions/{v}: every URL below it is immutable
  image: null,       // the Blob being looked at
  imageName: "",
  input: null,       // the image as the model sees it: a canvas at the input size
  probabilities: [], // [{label, index, probability}] best first, every class
  maps: {},          // layer -> {shape: [C, H, W], data, stats: {min, max}}
  pages: {},         // layer -> page index
  silent: {},        // layer -> true: its silent channels are shown too
  selected: null,    // {layer, channel}
  explainRun: null,  // AbortController of the explanation in flight
};
const layerInfo = (name) => state.meta.layers.find((l) => l.name === name);
const spatial = (layer) => layer.output_shape.length === 4;
const dims = (layer) => spatial(layer) ? layer.output_shape.slice(1) : [layer.output_shape[1], 1, 1];

// ---------------------------------------------------------------- models ------------

// The list follows the server: versions loaded, unloaded or made the default while the page
// is open show up at the next refresh (every 5 s), and a new default is shown at once.
let listed = "";
async function loadModels() {
  const { models } = await getJSON("/v1/models");
  const serving = models.filter((m) => m.default_version !== null);
  const signature = JSON.stringify(serving.map((m) => [m.name, m.default_version]));
  if (signature === listed) return;
  listed = signature;
  const chosen = $("model").value;
  $("model").replaceChildren(...serving.map((m) => el("option", { value: m.name, text: `${m.name} (v${m.default_version})` })));
  if (serving.some((m) => m.name === chosen)) $("model").value = chosen;
  if (serving.length) {
    const wanted = serving.find((m) => m.name === $("model").value);
    if (!state.meta || state.meta.name !== wanted.name || state.meta.version !== wanted.default_version) {
      await selectModel(wanted.name, wanted.default_version);
    }
  } else {
    state.meta = null;
    $("summary").textContent = "no model is ready on the server";
  }
  window.convscope.ready = true;
}

async function selectModel(name, version) {
  $("error").textContent = "";
  const path = `/v1/models/${encodeURIComponent(name)}` + (version ? `/versions/${version}` : "");
  state.meta = await getJSON(path);
  state.base = `/v1/models/${encodeURIComponent(state.meta.name)}/versions/${state.meta.version}`;
  state.maps = {}; state.pages = {}; state.silent = {}; state.selected = null;
  const m = state.meta, t = m.training || {}, p = m.params || {};
  $("summary").textContent = [
    m.arch, `input ${m.input.size.join("×")} ${m.input.color_mode === "L" ? "grey" : "colour"}`,
    `${m.labels.length} classes`, p.total ? `${p.total.toLocaleString()} parameters` : null,
    t.accuracy != null ? `${pct(t.accuracy)} held-out accuracy on ${t.dataset}` : null,
  ].filter(Boolean).join(" · ");
  renderNetwork();
  renderMethods(await getJSON(`/v1/models/${encodeURIComponent(m.name)}/layers?version=${m.version}`));
  await renderSamples();
  if (state.image) await look(state.image, state.imageName);
}

// ---------------------------------------------------------------- 1: start ----------

async function renderSamples() {
  const box = $("samples");
  $("samples-note").hidden = !state.meta.samples;
  if (!state.meta.samples) {
    box.replaceChildren(el("div", { class: "muted", text: "This model version has no sample images (an import without "
      + "--data-dir, or an export from before they existed): choose a file of your own." }));
    return;
  }
  const { samples } = await getJSON(`${state.base}/samples`);
  box.replaceChildren(...samples.map((s) => {
    const img = el("img", { alt: "" });
    const button = el("button", { class: "sample", type: "button", "aria-pressed": "false", "data-sample": s.id,
      title: `sample ${s.id}: ${s.label}`, "aria-label": `sample ${s.id}, class ${s.label}`,
      onclick: guarded(() => pickSample(s, button)) }, img, el("span", { text: s.label }));
    picture(s.image_url).then((url) => { img.src = url; }).catch(showError);
    return button;
  }));
}

async function pickSample(sample, button) {
  for (const b of document.querySelectorAll(".sample")) b.setAttribute("aria-pressed", String(b === button));
  const blob = await (await fetch(await picture(sample.image_url))).blob();
  await look(blob, `sample ${sample.id} (a held-out “${sample.label}”)`);
}

function pickFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) { showError(`${file.name} is not an image`); return; }
  for (const b of document.querySelectorAll(".sample")) b.setAttribute("aria-pressed", "false");
  look(file, file.name).catch(showError);
}

// The image as the model sees it: resized to its input size (no crop), grey for grey models.
async function modelView(blob) {
  const [h, w] = state.meta.input.size;
  const bitmap = await createImageBitmap(blob);
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, w, h);
  if (state.meta.input.color_mode === "L") {
    const image = ctx.getImageData(0, 0, w, h), d = image.data;
    for (let i = 0; i < d.length; i += 4) d[i] = d[i + 1] = d[i + 2] = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
    ctx.putImageData(image, 0, 0);
  }
  return canvas;
}

// ---------------------------------------------------------------- 2: predict --------

async function look(blob, name) {
  $("error").textContent = "";
  state.image = blob; state.imageName = name;
  const started = performance.now();
  const meta = state.meta;
  $("target").replaceChildren();
  const url = `${state.base}/predict?top_k=${meta.labels.length}&layers=all&encoding=npy&dtype=float16`;
  const [response, input] = await Promise.all([
    api(url, { method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" } }),
    modelView(blob),
  ]);
  const body = await response.json();
  if (meta !== state.meta) return;  // the model changed meanwhile
  const answered = performance.now();

  state.input = input;
  state.probabilities = body.predictions;
  state.maps = {};
  for (const [layer, entry] of Object.entries(body.feature_maps)) {
    const { data } = parseNpy(entry.data);
    const [c, h, w] = dims(layerInfo(layer));
    const min = new Float32Array(c), max = new Float32Array(c);
    for (let k = 0; k < c; k++) {
      let lo = Infinity, hi = -Infinity;
      for (let i = k * h * w; i < (k + 1) * h * w; i++) { const v = data[i]; if (v < lo) lo = v; if (v > hi) hi = v; }
      min[k] = lo; max[k] = hi;
    }
    state.maps[layer] = { c, h, w, data, min, max };
  }
  $("result").hidden = false; $("inside").hidden = false;
  drawInput();
  renderPredictions(body.timings_ms, answered - started);
  renderTargets();
  renderLayers();
  if (state.selected && state.maps[state.selected.layer]) await showChannel(state.selected.layer, state.selected.channel, false);
  await painted();
  const drawn = performance.now();
  // The explanation (a hundred forward passes and more for the perturbation methods) starts
  // once the overview is drawn: started with the prediction, it slowed both down on a small
  // machine where the browser and the server share the cores (benchmarks/README.md).
  const explained = explain();
  window.convscope.timings.push({ what: "image", model: meta.name, predict_ms: answered - started, draw_ms: drawn - answered,
                                  server_ms: body.timings_ms.total });
  await explained;
}

// Resolves once the browser has laid out and painted what the page just drew.
const painted = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

function drawInput() {
  const canvas = $("input"), source = state.input;
  canvas.width = source.width; canvas.height = source.height;
  canvas.getContext("2d").drawImage(source, 0, 0);
  const [h, w] = state.meta.input.size;
  $("input-note").textContent = `${state.imageName} · resized to ${w}×${h}${state.meta.input.color_mode === "L" ? ", grey" : ""}`;
}

function renderPredictions(timings, ms) {
  const top = state.probabilities.slice(0, 5);
  $("predictions").replaceChildren(...top.map((p, i) => el("tr", { class: i === 0 ? "best" : "" },
    el("td", { text: p.label }), el("td", { class: "p", text: pct(p.probability) }),
    el("td", {}, el("div", { class: "bar", style: `width:${Math.max(1, 120 * p.probability)}px` })))));
  $("predict-timing").textContent = `class scores and all ${state.meta.layers.length} layers' maps: ${ms.toFixed(0)} ms `
    + `(server ${timings.total.toFixed(0)} ms)`;
}

// ---------------------------------------------------------------- 2: explain --------

const METHODS = ["occlusion", "rise", "score-cam", "grad-cam", "hires-cam", "eigen-cam"];
// Occlusion's default is 13 x 13 window positions (228 passes with faithfulness's 59). The
// page asks for at most 160: 10 x 10 positions, the same window, a third fewer passes (on the
// Fashion-MNIST AlexNet-small as faithful by the deletion score, benchmarks/README.md), so
// an explanation follows its image in well under a second. The API's default is unchanged.
const PAGE_PASSES = { occlusion: 160 };

// The methods this model allows, from its layer catalogue (GET .../layers): none when its
// graph could not be analysed, with the reason, and then no explanation is asked for.
function renderMethods(catalogue) {
  const offered = catalogue.explanations || { methods: METHODS, default_method: null };
  state.explainable = offered.methods.length > 0;
  state.defaultMethod = offered.default_method;
  state.explainWhy = offered.unavailable || "";
  const current = $("method").value;
  $("method").replaceChildren(
    el("option", { value: "", text: offered.default_method ? `${offered.default_method} (default)` : "default" }),
    ...offered.methods.filter((m) => m !== offered.default_method).map((m) => el("option", { value: m, text: m })));
  if ([...$("method").options].some((o) => o.value === current)) $("method").value = current;
  $("method").disabled = !state.explainable;
  $("target").disabled = !state.explainable;
}

function renderTargets() {
  $("target").replaceChildren(...state.probabilities.map((p) => el("option", { value: p.index, text: `${p.label} (${pct(p.probability)})` })));
}

async function explain() {
  if (state.explainRun) state.explainRun.abort();  // the server stops a run whose client left
  if (!state.explainable) {
    state.explainRun = null;
    $("overlay").hidden = true; $("faithfulness").replaceChildren();
    $("explain-status").textContent = `This model cannot be explained${state.explainWhy ? `: ${state.explainWhy}` : "."}`;
    return;
  }
  const run = new AbortController();
  state.explainRun = run;
  const method = $("method").value, target = $("target").value;
  const query = new URLSearchParams({ encoding: "png" });
  if (method) query.set("method", method);
  const passes = PAGE_PASSES[method || state.defaultMethod];
  if (passes) query.set("passes", passes);
  if (target !== "") query.set("target", target);
  const started = performance.now();
  $("explain-status").textContent = `computing ${method || "the default method"}…`;
  try {
    const response = await api(`${state.base}/explain?${query}`, {
      method: "POST", body: state.image, signal: run.signal,
      headers: { "Content-Type": state.image.type || "application/octet-stream" },
    });
    const body = await response.json();
    if (run !== state.explainRun) return;
    const ms = performance.now() - started;
    $("overlay").src = `data:image/png;base64,${body.map.data}`;
    $("overlay").hidden = false;
    $("overlay").alt = `where the network found evidence for ${body.target.label} (${body.method})`;
    renderFaithfulness(body);
    const grid = body.parameters?.positions ? ` (${body.parameters.window.join("×")} px windows at ${body.parameters.positions} positions)` : "";
    $("explain-status").textContent = `${body.method}${grid}${body.layer ? ` on ${body.layer}` : ""} · evidence for “${body.target.label}” `
      + `(${pct(body.target.probability)}) · ${body.forward_passes} forward passes · ${ms.toFixed(0)} ms`;
    window.convscope.timings.push({ what: "explain", model: state.meta.name, method: body.method, ms, passes: body.forward_passes });
  } catch (error) {
    if (error.name === "AbortError" || run !== state.explainRun) return;
    $("overlay").hidden = true;
    $("faithfulness").replaceChildren();
    $("explain-status").textContent = error.status === 404 && /no route/.test(error.detail)
      ? "This server does not offer explanations." : error.message;
  }
}

function renderFaithfulness(body) {
  const f = body.faithfulness;
  if (!f) { $("faithfulness").replaceChildren(); return; }
  const beats = f.beats_random ?? f.deletion < f.random_deletion;
  $("faithfulness").replaceChildren(el("div", {},
    el("table", {},
      el("tr", {}, el("td", { text: "deletion" }), el("td", { class: "v", text: f.deletion.toFixed(3) })),
      el("tr", {}, el("td", { text: "random order" }), el("td", { class: "v", text: f.random_deletion.toFixed(3) })),
      el("tr", {}, el("td", { text: "insertion" }), el("td", { class: "v", text: f.insertion.toFixed(3) }))),
    el("div", { class: `verdict ${beats ? "good" : "bad"}`, text: beats ? "beats chance" : "no better than chance" }),
    f.deletion_curve ? curves(f) : null,
    body.note || f.note ? el("p", { class: "small", text: body.note || f.note }) : null,
    el("p", { class: "muted small", text: "How to read: deletion is P(class) as the map's top pixels go first (lower is "
      + "better, and below the random order's to beat chance); insertion, as they come back (higher is better)." })));
}

// P(class) as pixels go, most important first (deletion), in random order, and as they
// come back (insertion): the areas under these are the numbers above.
function curves(f) {
  const W = 220, H = 90, pad = 4;
  const canvas = el("canvas", { width: W * 2, height: H * 2, style: `width:${W}px;height:${H}px`,
    role: "img", "aria-label": "deletion, random-order deletion and insertion curves" });
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.strokeStyle = "#dde2e7"; ctx.strokeRect(pad, pad, W - 2 * pad, H - 2 * pad);
  const line = (values, colour, dash) => {
    ctx.beginPath(); ctx.setLineDash(dash); ctx.strokeStyle = colour; ctx.lineWidth = 1.8;
    values.forEach((v, i) => {
      const x = pad + (W - 2 * pad) * i / (values.length - 1), y = H - pad - (H - 2 * pad) * v;
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  };
  line(f.random_deletion_curve, "#a0aec0", [4, 3]);
  line(f.insertion_curve, "#2f855a", []);
  line(f.deletion_curve, "#c53030", []);
  return el("figure", { class: "curves" }, canvas, el("figcaption", { class: "small muted" },
    el("span", { style: "color:#c53030", text: "— deletion " }), el("span", { style: "color:#718096", text: "- - random " }),
    el("span", { style: "color:#2f855a", text: "— insertion" }), " · P(class) as pixels go (x: 0 → 100%)"));
}

// ---------------------------------------------------------------- 3: layers ---------

const PAGE = 64;

function tileSize(h) { return h === 1 ? 22 : h >= 24 ? 56 : h >= 12 ? 46 : 38; }

// The channels shown, in the chosen order; silent ones (nothing above zero on this image,
// common after a ReLU deep in a network) only when asked for, so the overview shows what fires.
function order(layer) {
  const map = state.maps[layer];
  let channels = [...Array(map.c).keys()];
  if (!state.silent[layer]) channels = channels.filter((k) => map.max[k] > 0);
  if ($("order").value === "active") channels.sort((a, b) => map.max[b] - map.max[a] || a - b);
  return channels;
}

function layerRange(map) {
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < map.c; k++) { lo = Math.min(lo, map.min[k]); hi = Math.max(hi, map.max[k]); }
  return [lo, hi];
}

function renderLayers() {
  const container = $("layers");
  container.replaceChildren(...state.meta.layers.map((layer) => {
    const card = el("div", { class: "layer card", "data-layer": layer.name });
    fillLayer(card, layer);
    return card;
  }));
  placeDetail();
}

function geometryText(layer) {
  const [c, h, w] = dims(layer);
  const shape = spatial(layer) ? `${c} × ${h} × ${w}` : `${c} units`;
  const parts = [shape];
  if (layer.receptive_field != null) parts.push(`receptive field ${layer.receptive_field}×${layer.receptive_field} px`);
  if (layer.stride != null) parts.push(`stride ${layer.stride}`);
  return parts.join(" · ");
}

function fillLayer(card, layer) {
  const map = state.maps[layer.name];
  const channels = order(layer.name);
  const page = Math.min(state.pages[layer.name] || 0, Math.max(0, Math.floor((channels.length - 1) / PAGE)));
  const shown = channels.slice(page * PAGE, (page + 1) * PAGE);
  const firing = Array.from(map.max).filter((v) => v > 0).length;
  const shared = $("shared").checked || map.h * map.w === 1;
  const [lo, hi] = layerRange(map);
  const size = tileSize(map.h);
  const head = el("div", { class: "layer-head" },
    el("b", { text: layer.name }), el("span", { text: `${layer.op}${layer.kind && layer.kind !== "other" ? ` (${layer.kind})` : ""}` }),
    el("span", { class: "geo", text: geometryText(layer) }),
    el("span", { class: "muted", text: `${firing} of ${map.c} fire on this image` }));
  if (firing < map.c) {
    const showing = Boolean(state.silent[layer.name]);
    head.append(el("button", { class: "silent-toggle", type: "button", "aria-pressed": String(showing),
      onclick: () => { state.silent[layer.name] = !showing; state.pages[layer.name] = 0; fillLayer(card, layer); } },
    showing ? `hide the ${map.c - firing} silent` : `show the ${map.c - firing} silent`));
  }
  if (channels.length > PAGE) {
    const pages = Math.ceil(channels.length / PAGE);
    const go = (to) => () => { state.pages[layer.name] = to; fillLayer(card, layer); card.querySelector(".tile")?.focus(); };
    head.append(el("span", { class: "pager" },
      el("button", { type: "button", disabled: page === 0, "aria-label": `${layer.name}: previous channels`, onclick: go(page - 1) }, "‹"),
      el("span", { text: `${page * PAGE + 1}–${Math.min(channels.length, (page + 1) * PAGE)} of ${channels.length}` }),
      el("button", { type: "button", disabled: page === pages - 1, "aria-label": `${layer.name}: next channels`, onclick: go(page + 1) }, "›")));
  }
  // The page's tiles are painted side by side into one small picture, and each button shows
  // its part of it: one image per layer to decode and composite instead of one canvas per
  // channel (a third of the drawing time on AlexNet-small).
  const sprite = el("canvas");
  sprite.width = shown.length * map.w; sprite.height = map.h;
  const ctx = sprite.getContext("2d"), table = lut("viridis");
  const image = ctx.createImageData(sprite.width, map.h);
  shown.forEach((channel, i) => {
    const lo_ = shared ? lo : map.min[channel], span = (shared ? hi : map.max[channel]) - lo_ || 1;
    for (let y = 0; y < map.h; y++) for (let x = 0; x < map.w; x++) {
      const v = map.data[(channel * map.h + y) * map.w + x], k = Math.max(0, Math.min(255, Math.round((v - lo_) / span * 255))) * 3;
      const o = (y * sprite.width + i * map.w + x) * 4;
      image.data[o] = table[k]; image.data[o + 1] = table[k + 1]; image.data[o + 2] = table[k + 2]; image.data[o + 3] = 255;
    }
  });
  ctx.putImageData(image, 0, 0);
  const url = shown.length ? sprite.toDataURL() : "";
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
      onclick: guarded(() => showChannel(layer.name, channel, true)),
    }, picture, el("span", { class: "n", text: channel }));
  }));
  card.replaceChildren(head, shown.length ? tiles : el("div", { class: "muted small", text: "No channel fires on this image." }));
}

// ---------------------------------------------------------------- 3: one channel ----

let detail = null;

function placeDetail() {
  if (!detail || !state.selected) return;
  const card = document.querySelector(`.layer[data-layer="${CSS.escape(state.selected.layer)}"]`);
  // Moving a node that holds the focus would drop it: move only when it must.
  if (card && card.nextElementSibling !== detail) card.after(detail);
}

function closeDetail() {
  const was = state.selected;
  state.selected = null;
  if (detail) detail.remove();
  for (const t of document.querySelectorAll(".tile[aria-pressed=true]")) t.setAttribute("aria-pressed", "false");
  if (was) document.querySelector(`.layer[data-layer="${CSS.escape(was.layer)}"] .tile[data-channel="${was.channel}"]`)?.focus();
}

function step(delta) {
  const { layer, channel } = state.selected;
  const channels = order(layer);
  if (!channels.length) return Promise.resolve();
  const next = channels[(channels.indexOf(channel) + delta + channels.length) % channels.length];
  const index = channels.indexOf(next);
  if (Math.floor(index / PAGE) !== (state.pages[layer] || 0)) {
    state.pages[layer] = Math.floor(index / PAGE);
    fillLayer(document.querySelector(`.layer[data-layer="${CSS.escape(layer)}"]`), layerInfo(layer));
  }
  return showChannel(layer, next, false);
}

async function showChannel(layerName, channel, focus) {
  const layer = layerInfo(layerName), map = state.maps[layerName];
  state.selected = { layer: layerName, channel };
  for (const t of document.querySelectorAll(".tile")) {
    const card = t.closest(".layer");
    t.setAttribute("aria-pressed", String(card.dataset.layer === layerName && Number(t.dataset.channel) === channel));
  }
  if (!detail) {
    detail = $("detail-template").content.firstElementChild.cloneNode(true);
    detail.querySelector(".prev").addEventListener("click", guarded(() => step(-1)));
    detail.querySelector(".next").addEventListener("click", guarded(() => step(1)));
    detail.querySelector(".close").addEventListener("click", closeDetail);
    detail.addEventListener("keydown", (e) => {
      if (e.key === "Escape") closeDetail();
      else if (e.key === "ArrowLeft" && e.target.tagName !== "SELECT") guarded(() => step(-1))();
      else if (e.key === "ArrowRight" && e.target.tagName !== "SELECT") guarded(() => step(1))();
    });
  }
  detail.setAttribute("aria-label", `${layerName} channel ${channel}`);
  detail.querySelector(".detail-title").textContent = `${layerName} · channel ${channel} of ${map.c}`;
  placeDetail();
  drawChannelOnImage(layer, map, channel);
  const filterDone = renderFilter(detail.querySelector(".filter-body"), layer, channel);
  const topDone = renderTop(detail.querySelector(".top-body"), layer, channel);
  if (focus) detail.querySelector(".next").focus({ preventScroll: true });
  if (focus) detail.scrollIntoView({ block: "nearest", behavior: "smooth" });
  await Promise.all([filterDone, topDone]);
}

// The map large, and over the input with the receptive field of its strongest unit.
function drawChannelOnImage(layer, map, channel) {
  const values = map.data.subarray(channel * map.h * map.w, (channel + 1) * map.h * map.w);
  const lo = $("shared").checked ? layerRange(map)[0] : map.min[channel];
  const hi = $("shared").checked ? layerRange(map)[1] : map.max[channel];
  paint(detail.querySelector(".map"), values, map.h, map.w, lo, hi);
  const [H, W] = state.meta.input.size;
  const scale = Math.max(1, Math.ceil(224 / Math.max(H, W)));
  const canvas = detail.querySelector(".map-overlay");
  canvas.width = W * scale; canvas.height = H * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(state.input, 0, 0, W * scale, H * scale);
  // heat: each input pixel takes the unit whose cell covers it (the map stretched over the input)
  const heat = el("canvas", { width: W, height: H }), hctx = heat.getContext("2d");
  const image = hctx.createImageData(W, H), table = lut("viridis"), span = hi > lo ? hi - lo : 1;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const v = values[Math.min(map.h - 1, Math.floor(y * map.h / H)) * map.w + Math.min(map.w - 1, Math.floor(x * map.w / W))];
    const level = Math.max(0, Math.min(1, (v - lo) / span)), i = (y * W + x) * 4, k = Math.round(level * 255) * 3;
    image.data[i] = table[k]; image.data[i + 1] = table[k + 1]; image.data[i + 2] = table[k + 2];
    image.data[i + 3] = Math.round(255 * 0.7 * level);
  }
  hctx.putImageData(image, 0, 0);
  ctx.drawImage(heat, 0, 0, W * scale, H * scale);
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  const y = Math.floor(best / map.w), x = best % map.w;
  const rf = layer.receptive_field, stride = layer.stride, offset = layer.receptive_field_offset;
  let where = "";
  if (spatial(layer) && rf != null && stride != null && offset != null) {
    const left = Math.max(0, offset + x * stride), top = Math.max(0, offset + y * stride);
    const right = Math.min(W, offset + x * stride + rf), bottom = Math.min(H, offset + y * stride + rf);
    ctx.strokeStyle = "#ff4040"; ctx.lineWidth = 2;
    ctx.strokeRect(left * scale + 1, top * scale + 1, (right - left) * scale - 2, (bottom - top) * scale - 2);
    where = ` Its strongest unit, at row ${y}, column ${x} of the ${map.h}×${map.w} map, sees input rows ${top}–${bottom - 1}, `
      + `columns ${left}–${right - 1} (red box): a ${rf}×${rf} px receptive field, ${stride} px between neighbouring units.`;
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
  const body = await getJSON(`${state.base}/layers/${encodeURIComponent(layer.name)}/channels/${channel}/filter`);
  if (state.selected?.channel !== channel || state.selected?.layer !== layer.name) return;
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

// One kernel [C][kh][kw]: colour for 3 channels (grey = 0), else the coolwarm map.
function kernelCanvas(kernel, colour) {
  const kh = kernel[0].length, kw = kernel[0][0].length;
  const peak = Math.max(1e-12, ...kernel.flat(2).map(Math.abs));
  const canvas = el("canvas", { width: kw, height: kh, style: `width:${Math.max(72, kw * 16)}px;height:${Math.max(72, kh * 16) * kh / kw}px` });
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(kw, kh), table = lut("coolwarm");
  for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
    const i = (y * kw + x) * 4;
    if (colour) for (let c = 0; c < 3; c++) image.data[i + c] = 255 * Math.min(1, Math.max(0, 0.5 + kernel[c][y][x] / (2 * peak)));
    else {
      const k = Math.round((kernel[0][y][x] / peak + 1) * 127.5) * 3;
      image.data[i] = table[k]; image.data[i + 1] = table[k + 1]; image.data[i + 2] = table[k + 2];
    }
    image.data[i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

// Every input channel's kernel of one filter, tiled, on one range (coolwarm, 0 = grey).
function kernelGrid(kernel) {
  const cin = kernel.length, kh = kernel[0].length, kw = kernel[0][0].length;
  const cols = Math.ceil(Math.sqrt(cin)), rows = Math.ceil(cin / cols);
  const peak = Math.max(1e-12, ...kernel.flat(2).map(Math.abs));
  const W = cols * (kw + 1) + 1, H = rows * (kh + 1) + 1;
  const canvas = el("canvas", { width: W, height: H });
  const scale = Math.max(2, Math.floor(260 / W));
  canvas.style.width = `${W * scale}px`; canvas.style.height = `${H * scale}px`;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(W, H), table = lut("coolwarm");
  image.data.fill(255);
  for (let c = 0; c < cin; c++) {
    const ox = 1 + (c % cols) * (kw + 1), oy = 1 + Math.floor(c / cols) * (kh + 1);
    for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) {
      const i = ((oy + y) * W + ox + x) * 4, k = Math.round((kernel[c][y][x] / peak + 1) * 127.5) * 3;
      image.data[i] = table[k]; image.data[i + 1] = table[k + 1]; image.data[i + 2] = table[k + 2];
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
    return;
  }
  const body = await getJSON(`${state.base}/layers/${encodeURIComponent(layer.name)}/channels/${channel}`);
  if (state.selected?.channel !== channel || state.selected?.layer !== layer.name) return;
  const [H, W] = state.meta.input.size;
  const loads = [];
  box.replaceChildren(...body.top.map((entry) => {
    const img = el("img", { alt: `held-out ${entry.label}, activation ${fmt(entry.activation)}` });
    loads.push(picture(entry.image_url).then((url) => new Promise((resolve) => {
      img.onload = resolve; img.onerror = resolve; img.src = url;
    })));
    const frame = el("div", { class: "frame" }, img);
    if (entry.box && !entry.crop) {
      const b = entry.box;
      frame.append(el("div", { class: "box", style: `left:${100 * b.left / W}%;top:${100 * b.top / H}%;`
        + `width:${100 * (b.right - b.left) / W}%;height:${100 * (b.bottom - b.top) / H}%` }));
    }
    return el("div", { class: "patch", title: `held-out image ${entry.image}: ${entry.label}, max ${fmt(entry.activation)}` },
      frame, el("div", { class: "cap" }, el("span", { text: entry.label }), el("span", { class: "muted", text: fmt(entry.activation) })));
  }));
  await Promise.all(loads);
}

// ---------------------------------------------------------------- 4: the network ----

function renderNetwork() {
  const m = state.meta;
  $("network").hidden = false;
  const maxH = Math.max(...m.layers.map((l) => dims(l)[1]));
  const maxC = Math.max(...m.layers.map((l) => dims(l)[0]));
  const head = el("tr", {}, ...["layer", "op", "C × H × W", "resolution", "channels", "receptive field", "stride", "params"]
    .map((t) => el("th", { text: t })));
  $("geometry").replaceChildren(head, ...m.layers.map((l) => {
    const [c, h, w] = dims(l);
    return el("tr", {}, el("td", { text: l.name }), el("td", { text: l.op }),
      el("td", { text: spatial(l) ? `${c} × ${h} × ${w}` : `${c}` }),
      el("td", {}, el("span", { class: "mini", style: `width:${Math.max(2, 60 * h / maxH)}px`, title: `${h}×${w}` })),
      el("td", {}, el("span", { class: "mini c", style: `width:${Math.max(2, 60 * c / maxC)}px`, title: `${c} channels` })),
      el("td", { text: l.receptive_field != null ? `${l.receptive_field} px` : "—" }),
      el("td", { text: l.stride ?? "—" }), el("td", { text: (l.params ?? 0).toLocaleString() }));
  }));
  const p = m.params || {};
  if (p.total) {
    const share = (n) => (100 * (n || 0) / p.total);
    $("split").replaceChildren(
      el("div", { class: "split", "aria-hidden": "true" },
        el("div", { class: "conv", style: `width:${share(p.conv)}%` }), el("div", { class: "dense", style: `width:${share(p.dense)}%` }),
        el("div", { class: "other", style: `width:${share(p.other)}%` })),
      el("div", { text: `${p.total.toLocaleString()} parameters: conv ${(p.conv || 0).toLocaleString()} (${share(p.conv).toFixed(1)}%) · `
        + `dense ${(p.dense || 0).toLocaleString()} (${share(p.dense).toFixed(1)}%)`
        + (p.other ? ` · other ${p.other.toLocaleString()}` : "") }),
      el("div", { class: "muted small", text: "A dense layer connects every input to every unit; a convolution reuses "
        + "one small filter over the whole image, so most weights sit in the dense layers." }));
    $("params").replaceChildren(el("tr", {}, ...["module", "type", "params", "share"].map((t) => el("th", { text: t }))),
      ...(p.per_module || []).map((r) => el("tr", {}, el("td", { text: r.name }), el("td", { text: r.type }),
        el("td", { text: r.params.toLocaleString() }), el("td", { text: `${share(r.params).toFixed(1)}%` }))));
  } else {
    $("split").replaceChildren(el("div", { class: "muted", text: "No parameter counts recorded for this model." }));
    $("params").replaceChildren();
  }
  renderFirstFilters();
}

// Only the first conv layer's filters as a whole: readable (few, small, on the image's
// own channels). Deeper ones are shown one channel at a time, on demand.
function renderFirstFilters() {
  const m = state.meta, first = m.layers.find((l) => l.weight);
  $("first-filters").hidden = !first;
  if (!first) return;
  const path = `/v1/models/${encodeURIComponent(m.name)}/layers/${encodeURIComponent(first.name)}/filters.png?version=${m.version}`;
  picture(`${path}&state=trained`).then((url) => { $("filters-trained").src = url; }).catch(showError);
  const initial = m.files && "initial_weights.npz" in m.files;
  $("filters-initial-fig").hidden = !initial;
  if (initial) picture(`${path}&state=initial`).then((url) => { $("filters-initial").src = url; }).catch(showError);
  const cin = first.in_channels ?? m.input.channels;
  const how = [first.out_channels, first.kernel_size ? `of ${first.kernel_size.join("×")}` : null].filter((x) => x != null).join(" ");
  $("filters-note").textContent = `${first.conv || first.name}: ${how ? `${how} ` : ""}filters over the image's `
    + `${cin === 3 ? "red, green and blue channels (in colour, grey = 0)" : cin === 1 ? "grey channel (blue: negative, red: positive)" : `${cin} channels`}. `
    + (initial ? "Nobody designed them: training started from the random ones and backpropagation found the rest from the data." : "No record of them before training.");
}

// ---------------------------------------------------------------- wiring ------------

$("model").addEventListener("change", guarded((e) => selectModel(e.target.value)));
$("file").addEventListener("change", (e) => pickFile(e.target.files[0]));
$("target").addEventListener("change", () => explain());
$("method").addEventListener("change", () => explain());
$("shared").addEventListener("change", () => { if (Object.keys(state.maps).length) { renderLayers(); if (state.selected) showChannel(state.selected.layer, state.selected.channel, false).catch(showError); } });
$("order").addEventListener("change", () => { state.pages = {}; if (Object.keys(state.maps).length) renderLayers(); });
const drop = $("drop");
for (const kind of ["dragenter", "dragover"]) document.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
document.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  pickFile([...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/")) || e.dataTransfer?.files[0]);
});
$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("convscope-key", $("key").value.trim());
  $("key").value = ""; $("keyform").hidden = true; $("error").textContent = ""; listed = "";
  loadModels().catch(showError);
});
const refresh = () => loadModels().catch(showError);
refresh();
setInterval(() => { if ($("keyform").hidden) refresh(); }, 5000);
