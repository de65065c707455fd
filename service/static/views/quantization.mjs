// Section 5, "int8 and float": shown when the version on show is an int8 version, or a float
// version with an int8 version served beside it. What the export's gate measured (agreement,
// accuracies, the largest probability difference, the speed it timed) and one bar per layer
// for its error against the float version (SQNR over the held-out images the gate judged on);
// a layer's bar opens its worst channel, where the channel card shows the float and int8 maps
// of that channel on the current image side by side (views/channel.mjs).

import { paths } from "../lib/api.mjs";
import { pct } from "../lib/format.mjs";
import { agreementFigures, errorBars, speedText, twinOf } from "../lib/quantization.mjs";
import { $, el, guarded } from "../ui/dom.mjs";
import { getJSON } from "../ui/server.mjs";
import { layerInfo, state } from "../state.mjs";

let open = () => Promise.resolve();  // (layer, channel, focus) -> opens the channel

/** The other precision's version of the model on show, from the server's model list. */
export function findTwin() {
  const twin = twinOf(state.models, state.meta.name, state.meta.version);
  state.twin = twin && { ...twin, base: paths.versionPath(state.meta.name, twin.version) };
}

/** Draws the section, or hides it when the model on show has no int8 side. */
export async function render() {
  const meta = state.meta;
  const int8Base = meta.precision === "int8" ? state.base : state.twin?.precision === "int8" ? state.twin.base : null;
  $("quantization").hidden = !int8Base;
  if (!int8Base) return;
  const record = await getJSON(paths.quantization(int8Base));
  if (meta !== state.meta) return;
  state.quantization = record;
  $("quantization-summary").replaceChildren(...summary(record));
  $("quantization-bars").replaceChildren(...errorBars(record.layers, record.float_layers).map(bar));
}

function summary(r) {
  const showing = state.meta.version === r.version ? `this page shows the int8 version (v${r.version})`
    : `this page shows the float version (v${r.quantized_from}); its int8 version is v${r.version}`;
  const both = r.float_version.served ? "Both are served: open a channel to see its float and int8 maps side by side."
    : `The float version (v${r.quantized_from}) is not served here, so only the figures of the export are shown.`;
  const agreed = agreementFigures(r.agreement, r.evaluation_images);
  const accuracy = r.float_accuracy != null
    ? `accuracy ${pct(r.float_accuracy)} float, ${pct(r.int8_accuracy)} int8`
    : "no labels the model knows: agreement only";
  return [
    el("p", { text: `Version ${r.version} is version ${r.quantized_from} in int8 (${r.method} calibration on `
      + `${r.calibration_images} held-out images); ${showing}. ${both}` }),
    el("ul", { class: "gate" },
      el("li", {}, el("b", { text: `top-1 agreement ${agreed.share}` }),
        ` (${agreed.same} of ${r.evaluation_images} other held-out images; the gate: ${pct(r.min_agreement)})`),
      el("li", { text: accuracy }),
      el("li", { text: `largest difference of any class probability: ${pct(r.max_probability_difference)}` }),
      keptFloat(r),
      speedText(r.speed) ? el("li", { text: `int8 ran ${speedText(r.speed)} at export` }) : null,
      el("li", { class: "muted", text: r.data ?? "" })),
  ];
}

/** The layers the export kept float32 because int8 everywhere missed the gate, if any. */
function keptFloat(r) {
  const kept = r.float_layers ?? [];
  if (!kept.length) return null;
  const first = r.attempts?.[0];
  const all = first && agreementFigures(first.agreement, r.evaluation_images);
  const everywhere = all ? ` (int8 everywhere agreed on ${all.share}, ${all.same} of ${r.evaluation_images} images)` : "";
  return el("li", { text: `${kept.length} layer(s) kept float32, those adding the most quantization noise`
    + `${everywhere}: ${kept.join(", ")}` });
}

function bar(row) {
  const layer = layerInfo(row.name);
  const db = row.db === null ? "identical" : `${row.db.toFixed(1)} dB`;
  const worst = row.worstChannel !== null && row.worstChannel !== undefined
    ? `worst channel ${row.worstChannel} (${row.worstDb.toFixed(1)} dB)` : "";
  const label = el("span", { class: "q-name", text: row.output ? `${row.name} (class scores)` : row.name });
  const track = el("span", { class: "q-track" },
    el("span", { class: `q-bar ${row.severity}`, style: `width:${Math.max(1, 100 * row.fraction)}%` }));
  const figures = el("span", { class: "q-figs", text: `${db} · ${(100 * row.relative).toFixed(2)}% error` });
  const note = el("span", { class: "q-worst muted", text: row.float ? `kept float32${worst ? `; ${worst}` : ""}` : worst });
  const title = `${row.name}: SQNR ${db}, relative error ${(100 * row.relative).toFixed(3)}% (${row.severity})`;
  if (layer && row.worstChannel !== null && row.worstChannel !== undefined && state.image) {
    return el("button", { type: "button", class: "q-row", title: `${title}; opens channel ${row.worstChannel}`,
      "data-layer": row.name, onclick: guarded(() => open(row.name, row.worstChannel, true)) },
    label, track, figures, note);
  }
  return el("div", { class: "q-row", title, "data-layer": row.name }, label, track, figures, note);
}

/** Makes the bars clickable once an image is on show (they open a layer's worst channel). */
export function redraw() {
  if (state.quantization && !$("quantization").hidden) {
    $("quantization-bars").replaceChildren(...errorBars(state.quantization.layers, state.quantization.float_layers)
      .map(bar));
  }
}

/** `pick(layer, channel, focus)`: what a bar does. */
export function wire(pick) {
  open = pick;
}
