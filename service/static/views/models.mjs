// The model and version pickers and the summary (header). The lists follow the server:
// versions loaded, unloaded or made the default while the page is open show up at the next
// refresh, and a new default is shown at once, unless the user picked a version, which stays
// on show as long as it serves.

import { pct } from "../lib/format.mjs";
import { paths } from "../lib/api.mjs";
import { $, el } from "../ui/dom.mjs";
import { getJSON } from "../ui/server.mjs";
import { state } from "../state.mjs";

let listed = "";  // the models' [name, default, ready versions] last shown

/** Forget what was listed, so the next refresh rebuilds the list (after a new API key). */
export const forget = () => { listed = ""; };

const ready = (model) => model.versions.filter((v) => v.state === "ready");

/** Lists the models with a default version; when the version to show changed (or none is shown
 * yet), `select(name, version)` shows it: the picked one while it serves, else the default. */
export async function refresh(select) {
  const { models } = await getJSON(paths.models());
  state.models = models;
  const serving = models.filter((m) => m.default_version !== null);
  const signature = JSON.stringify(serving.map((m) => [m.name, m.default_version, ready(m).map((v) => v.version)]));
  if (signature === listed) return false;
  listed = signature;
  const chosen = $("model").value;
  $("model").replaceChildren(...serving.map((m) => el("option", { value: m.name, text: `${m.name} (v${m.default_version})` })));
  if (serving.some((m) => m.name === chosen)) $("model").value = chosen;
  if (!serving.length) {
    state.meta = null;
    $("version").replaceChildren();
    $("summary").textContent = "no model is ready on the server";
    return true;
  }
  const wanted = serving.find((m) => m.name === $("model").value);
  const pinned = state.pinned?.name === wanted.name && ready(wanted).some((v) => v.version === state.pinned.version);
  if (!pinned) state.pinned = null;
  const version = pinned ? state.pinned.version : wanted.default_version;
  listVersions(wanted.name, version);
  if (!state.meta || state.meta.name !== wanted.name || state.meta.version !== version) await select(wanted.name, version);
  return true;
}

/** The version picker: the model's ready versions, newest first, with their precision. */
function listVersions(name, shown) {
  const model = state.models.find((m) => m.name === name);
  if (!model) return;
  $("version").replaceChildren(...ready(model).map((v) => el("option", { value: String(v.version),
    text: `v${v.version} · ${v.precision ?? "?"}${v.version === model.default_version ? " (default)" : ""}` })));
  $("version").value = String(shown);
}

/** Wires the pickers: a model shows its default version; a version is shown until it stops serving. */
export function wire(select) {
  $("model").addEventListener("change", (e) => { state.pinned = null; select(e.target.value); });
  $("version").addEventListener("change", (e) => {
    state.pinned = { name: $("model").value, version: Number(e.target.value) };
    select(state.pinned.name, state.pinned.version);
  });
}

/** The summary line: architecture, precision, input, classes, parameters, held-out accuracy;
 * and the version picker set to the version on show. */
export function showSummary(meta) {
  listVersions(meta.name, meta.version);
  const t = meta.training || {}, p = meta.params || {}, q = meta.quantization;
  $("summary").textContent = [
    meta.arch, q ? `int8 (of v${q.quantized_from})` : null,
    `input ${meta.input.size.join("×")} ${meta.input.color_mode === "L" ? "grey" : "colour"}`,
    `${meta.labels.length} classes`, p.total ? `${p.total.toLocaleString()} parameters` : null,
    t.accuracy != null ? `${pct(t.accuracy)} held-out accuracy on ${t.dataset}${q ? " (float)" : ""}` : null,
  ].filter(Boolean).join(" · ");
}
