// The model picker and summary (header). The list follows the server: versions loaded,
// unloaded or made the default while the page is open show up at the next refresh, and a
// new default is shown at once.

import { pct } from "../lib/format.mjs";
import { paths } from "../lib/api.mjs";
import { $, el } from "../ui/dom.mjs";
import { getJSON } from "../ui/server.mjs";
import { state } from "../state.mjs";

let listed = "";  // the serving [name, default version] pairs last shown

/** Forget what was listed, so the next refresh rebuilds the list (after a new API key). */
export const forget = () => { listed = ""; };

/** Lists the models with a default version; when the one on show changed (or none is shown
 * yet), `select(name, version)` shows the wanted one. */
export async function refresh(select) {
  const { models } = await getJSON(paths.models());
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
      await select(wanted.name, wanted.default_version);
    }
  } else {
    state.meta = null;
    $("summary").textContent = "no model is ready on the server";
  }
}

/** Wires the picker: choosing a model shows its default version. */
export function wire(select) {
  $("model").addEventListener("change", (e) => select(e.target.value));
}

/** The summary line: architecture, input, classes, parameters, held-out accuracy. */
export function showSummary(meta) {
  const t = meta.training || {}, p = meta.params || {};
  $("summary").textContent = [
    meta.arch, `input ${meta.input.size.join("×")} ${meta.input.color_mode === "L" ? "grey" : "colour"}`,
    `${meta.labels.length} classes`, p.total ? `${p.total.toLocaleString()} parameters` : null,
    t.accuracy != null ? `${pct(t.accuracy)} held-out accuracy on ${t.dataset}` : null,
  ].filter(Boolean).join(" · ");
}
