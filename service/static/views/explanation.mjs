// Section 2, right, "Where the network looked": the explanation overlay for a class, by a
// method the server offers for this model (the catalogue's `explanations`), with its
// faithfulness scores and curves.

import { paths } from "../lib/api.mjs";
import { pct } from "../lib/format.mjs";
import { $, el } from "../ui/dom.mjs";
import { client } from "../ui/server.mjs";
import { explanations, state } from "../state.mjs";

// Occlusion's default is 13 x 13 window positions (228 passes with faithfulness's 59). The
// page asks for at most 160: 10 x 10 positions, the same window, a third fewer passes (on the
// Fashion-MNIST AlexNet-small as faithful by the deletion score, benchmarks/README.md), so
// an explanation follows its image in well under a second. The API's default is unchanged.
const PAGE_PASSES = { occlusion: 160 };

/** The methods this model allows, from its catalogue: none when its graph could not be
 * analysed, with the reason, and then no explanation is asked for. */
export function renderMethods() {
  const offered = explanations();
  const current = $("method").value;
  $("method").replaceChildren(
    el("option", { value: "", text: offered.default_method ? `${offered.default_method} (default)` : "default" }),
    ...offered.methods.filter((m) => m !== offered.default_method).map((m) => el("option", { value: m, text: m })));
  if ([...$("method").options].some((o) => o.value === current)) $("method").value = current;
  $("method").disabled = !offered.methods.length;
  $("target").disabled = !offered.methods.length;
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
    $("overlay").hidden = true; $("faithfulness").replaceChildren();
    $("explain-status").textContent = `This model cannot be explained${offered.unavailable ? `: ${offered.unavailable}` : "."}`;
    return;
  }
  const run = new AbortController();
  state.explainRun = run;
  const method = $("method").value, target = $("target").value;
  const query = new URLSearchParams({ encoding: "png" });
  if (method) query.set("method", method);
  const passes = PAGE_PASSES[method || offered.default_method];
  if (passes) query.set("passes", passes);
  if (target !== "") query.set("target", target);
  const started = performance.now();
  $("explain-status").textContent = `computing ${method || "the default method"}…`;
  try {
    const response = await client.request(paths.explain(state.base, query), {
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

/** Wires the class and method pickers: each change explains again. */
export function wire() {
  $("target").addEventListener("change", () => explain());
  $("method").addEventListener("change", () => explain());
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
