// Section 4, "The network": every layer's shape, receptive field and stride; where the
// parameters sit; the first conv layer's filters, trained and as training began.

import { paths } from "../lib/api.mjs";
import { dims, spatial } from "../lib/geometry.mjs";
import { $, el, showError } from "../ui/dom.mjs";
import { picture } from "../ui/server.mjs";
import { layerInfo, state } from "../state.mjs";

export function render() {
  const m = state.meta;
  $("network").hidden = false;
  const maxH = Math.max(...m.layers.map((l) => dims(l)[1]));
  const maxC = Math.max(...m.layers.map((l) => dims(l)[0]));
  const head = (first) => el("tr", {}, ...[first, "op", "C × H × W", "resolution", "channels", "receptive field", "stride", "params"]
    .map((t) => el("th", { text: t })));
  const row = (name, l, params) => {
    const [c, h, w] = dims(l);
    return el("tr", {}, el("td", { text: name }), el("td", { text: l.op }),
      el("td", { text: spatial(l) ? `${c} × ${h} × ${w}` : `${c}` }),
      el("td", {}, el("span", { class: "mini", style: `width:${Math.max(2, 60 * h / maxH)}px`, title: `${h}×${w}` })),
      el("td", {}, el("span", { class: "mini c", style: `width:${Math.max(2, 60 * c / maxC)}px`, title: `${c} channels` })),
      el("td", { text: l.receptive_field != null ? `${l.receptive_field} px` : "—" }),
      el("td", { text: l.stride ?? "—" }), el("td", { text: (params ?? 0).toLocaleString() }));
  };
  const everyLayer = [head("layer"), ...m.layers.map((l) => row(l.name, l, l.params))];
  // A network with blocks: one row per block (its output's shape, all its layers' parameters),
  // every layer on demand; a chain: every layer.
  $("geometry-title").textContent = state.blocks ? "Blocks: output shape, receptive field, stride" : "Layers: shape, receptive field, stride";
  $("geometry-details").hidden = !state.blocks;
  if (state.blocks) {
    $("geometry").replaceChildren(head("block"), ...state.rows.map((r) => row(r.title, layerInfo(r.output),
      r.layers.reduce((sum, n) => sum + (layerInfo(n).params ?? 0), 0))));
    $("geometry-summary").textContent = `every layer (${m.layers.length})`;
    $("geometry-layers").replaceChildren(...everyLayer);
  } else {
    $("geometry").replaceChildren(...everyLayer);
    $("geometry-layers").replaceChildren();
  }
  renderParams(m.params || {});
  renderFirstFilters();
}

function renderParams(p) {
  if (!p.total) {
    $("split").replaceChildren(el("div", { class: "muted", text: "No parameter counts recorded for this model." }));
    $("params").replaceChildren();
    $("params-details").hidden = true;
    return;
  }
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
  const modules = p.per_module || [];
  $("params-details").hidden = !modules.length;
  $("params-details").open = modules.length <= 16;  // a deep net's hundreds of modules on demand
  $("params-summary").textContent = `per module (${modules.length})`;
  $("params").replaceChildren(el("tr", {}, ...["module", "type", "params", "share"].map((t) => el("th", { text: t }))),
    ...(p.per_module || []).map((r) => el("tr", {}, el("td", { text: r.name }), el("td", { text: r.type }),
      el("td", { text: r.params.toLocaleString() }), el("td", { text: `${share(r.params).toFixed(1)}%` }))));
}

// Only the first conv layer's filters as a whole: readable (few, small, on the image's
// own channels). Deeper ones are shown one channel at a time, on demand.
function renderFirstFilters() {
  const m = state.meta, first = m.layers.find((l) => l.weight);
  $("first-filters").hidden = !first;
  if (!first) return;
  picture(paths.filtersPng(m.name, m.version, first.name, "trained")).then((url) => { $("filters-trained").src = url; }).catch(showError);
  const initial = m.files && "initial_weights.npz" in m.files;
  $("filters-initial-fig").hidden = !initial;
  if (initial) picture(paths.filtersPng(m.name, m.version, first.name, "initial")).then((url) => { $("filters-initial").src = url; }).catch(showError);
  const cin = first.in_channels ?? m.input.channels;
  const how = [first.out_channels, first.kernel_size ? `of ${first.kernel_size.join("×")}` : null].filter((x) => x != null).join(" ");
  $("filters-note").textContent = `${first.conv || first.name}: ${how ? `${how} ` : ""}filters over the image's `
    + `${cin === 3 ? "red, green and blue channels (in colour, grey = 0)" : cin === 1 ? "grey channel (blue: negative, red: positive)" : `${cin} channels`}. `
    + (initial ? "Nobody designed them: training started from the random ones and backpropagation found the rest from the data." : "No record of them before training.");
}
