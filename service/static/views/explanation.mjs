// Section 2, right, "Where the network looked": the explanation for a class, by a method the
// server offers for this model (the catalogue's `explanations`, with what it measured of each
// method where it says), painted here over the input in the server's saliency colours (the
// map comes as numbers, `encoding=npy`): an opacity control, a legend, and the faithfulness
// scores and curves.

import { paths } from "../lib/api.mjs";
import { cssGradient, put } from "../lib/colormap.mjs";
import { pct } from "../lib/format.mjs";
import { DEFAULT_OPACITY, overlayAlpha, upscale } from "../lib/layout.mjs";
import { methodLabel, methodNotes } from "../lib/methods.mjs";
import { parseNpyBase64 } from "../lib/npy.mjs";
import { $, el } from "../ui/dom.mjs";
import { client } from "../ui/server.mjs";
import { explanations, state } from "../state.mjs";

/** The methods this model allows, from its catalogue (with each one's measured share of
 * maps that beat a random map, where the catalogue has it): none when its graph could not be
 * analysed, with the reason, and then no explanation is asked for. */
export function renderMethods() {
  const offered = explanations();
  const { notes, reason } = methodNotes(offered);
  const current = $("method").value;
  $("method").replaceChildren(
    el("option", { value: "", text: offered.default_method ? methodLabel(offered.default_method, notes[offered.default_method], true) : "default",
                   title: reason }),
    ...offered.methods.filter((m) => m !== offered.default_method)
      .map((m) => el("option", { value: m, text: methodLabel(m, notes[m]), title: notes[m]?.why })));
  if ([...$("method").options].some((o) => o.value === current)) $("method").value = current;
  $("method").disabled = !offered.methods.length;
  $("target").disabled = !offered.methods.length;
  noteMethod();
  $("saliency-ramp").style.background = cssGradient(state.colormaps.saliency.stops);
}

/** Under the pickers: why the default is the default, or why the method chosen is not recommended. */
function noteMethod() {
  const { notes, reason } = methodNotes(explanations());
  const chosen = $("method").value;
  $("method-note").textContent = chosen ? (notes[chosen]?.why ?? (notes[chosen] && !notes[chosen].recommended
    ? `${chosen} is not recommended for this model.` : "")) : (reason ?? "");
}

/** No class to pick while a new image is predicted. */
export const clearTargets = () => $("target").replaceChildren();

/** Every class, best first, to explain. */
export function renderTargets() {
  $("target").replaceChildren(...state.probabilities.map((p) => el("option", { value: p.index, text: `${p.label} (${pct(p.probability)})` })));
}

/** Explains the image for the chosen class and method; a newer call aborts an older one. */
export async function explain() {
  if (state.explainRun) state.explainRun.abort();  // the server stops a run whose client left
  const offered = explanations();
  if (!offered.methods.length) {
    state.explainRun = null;
    state.explained = null;
    $("overlay").hidden = true; $("faithfulness").replaceChildren();
    $("explain-status").textContent = `This model cannot be explained${offered.unavailable ? `: ${offered.unavailable}` : "."}`;
    return;
  }
  const run = new AbortController();
  state.explainRun = run;
  const method = $("method").value, target = $("target").value;
  // the server's own defaults for the method (its cost and layer), which it chooses per model
  const query = new URLSearchParams({ encoding: "npy" });
  if (method) query.set("method", method);
  if (target !== "") query.set("target", target);
  const started = performance.now();
  $("explain-status").textContent = `computing ${method || "the default method"}…`;
  state.explained = null;  // the map on show is another image's or class's: dimmed until this one comes
  $("overlay").classList.add("stale");
  try {
    const response = await client.request(paths.explain(state.base, query), {
      method: "POST", body: state.image, signal: run.signal,
      headers: { "Content-Type": state.image.type || "application/octet-stream" },
    });
    const body = await response.json();
    if (run !== state.explainRun) return;
    const ms = performance.now() - started;
    const { shape, data } = parseNpyBase64(body.map.data);
    state.explained = { h: shape[0], w: shape[1], data, label: body.target.label, method: body.method };
    paintOverlay();
    renderFaithfulness(body);
    const grid = body.parameters?.positions ? ` (${body.parameters.window.join("×")} px windows at ${body.parameters.positions} positions)` : "";
    $("explain-status").textContent = `${body.method}${grid}${body.layer ? ` on ${body.layer}` : ""} · evidence for “${body.target.label}” `
      + `(${pct(body.target.probability)}) · ${body.forward_passes} forward passes · ${ms.toFixed(0)} ms`;
    window.convscope.timings.push({ what: "explain", model: state.meta.name, method: body.method, ms, passes: body.forward_passes });
  } catch (error) {
    if (error.name === "AbortError" || run !== state.explainRun) return;
    state.explained = null;
    $("overlay").hidden = true;
    $("faithfulness").replaceChildren();
    $("explain-status").textContent = error.status === 404 && /no route/.test(error.detail)
      ? "This server does not offer explanations." : error.message;
  }
}

/** Wires the class and method pickers (each change explains again) and the opacity control
 * (paints the map on show again). */
export function wire() {
  $("target").addEventListener("change", () => explain());
  $("method").addEventListener("change", () => { noteMethod(); explain(); });
  $("opacity").value = String(Math.round(100 * DEFAULT_OPACITY));
  $("opacity").addEventListener("input", paintOverlay);
  opacityText();
}

const opacity = () => Number($("opacity").value) / 100;
const opacityText = () => { $("opacity-value").textContent = `${$("opacity").value}%`; };

/** The map on show as heat over the input the model saw, at the control's opacity: each
 * pixel's heat as opaque as overlayAlpha says (none where there is no evidence). */
export function paintOverlay() {
  opacityText();
  const shown = state.explained, canvas = $("overlay");
  if (!shown || !state.input) return;  // none yet, or one on its way: the control applies to it
  const { h, w, data } = shown;
  const scale = upscale(h, w);
  canvas.width = w * scale; canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = scale === 1;
  ctx.drawImage(state.input, 0, 0, canvas.width, canvas.height);
  const heat = el("canvas", { width: w, height: h }), hctx = heat.getContext("2d");
  const image = hctx.createImageData(w, h), table = state.colormaps.saliency.table, a = opacity();
  for (let i = 0; i < h * w; i++) {
    const v = Math.min(1, Math.max(0, data[i] || 0));
    put(image.data, i * 4, table, Math.round(v * 255), Math.round(255 * overlayAlpha(v, a)));
  }
  hctx.putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
  canvas.classList.remove("stale");
  canvas.setAttribute("aria-label", `where the network found evidence for ${shown.label} (${shown.method}), heat at ${$("opacity").value}% opacity`);
  canvas.dataset.method = shown.method;
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
