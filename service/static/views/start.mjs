// Section 1, "Pick an image": the model's held-out samples, a file picker and a drop zone.
// Whatever is picked goes to `look(blob, name)` (explorer.mjs).

import { paths } from "../lib/api.mjs";
import { pct } from "../lib/format.mjs";
import { $, el, guarded, showError } from "../ui/dom.mjs";
import { getJSON, picture } from "../ui/server.mjs";
import { state } from "../state.mjs";

const press = (button) => {
  for (const b of document.querySelectorAll(".sample")) b.setAttribute("aria-pressed", String(b === button));
};

/** The samples of the model on show, each a button that looks at it. */
export async function renderSamples(look) {
  const box = $("samples");
  $("samples-note").hidden = !state.meta.samples;
  if (!state.meta.samples) {
    box.replaceChildren(el("div", { class: "muted", text: "This model version has no sample images (an import without "
      + "--data-dir, or an export from before they existed): choose a file of your own." }));
    return;
  }
  const { samples } = await getJSON(paths.samples(state.base));
  box.replaceChildren(...samples.map((s) => {
    const img = el("img", { alt: "" });
    const button = el("button", { class: "sample", type: "button", "aria-pressed": "false", "data-sample": s.id,
      title: `sample ${s.id}: ${s.label}${s.score != null ? ` (the model's ${pct(s.score)})` : ""}`,
      "aria-label": `sample ${s.id}, class ${s.label}`,
      onclick: guarded(async () => {
        press(button);
        const blob = await (await fetch(await picture(s.image_url))).blob();
        await look(blob, `sample ${s.id} (a held-out “${s.label}”)`);
      }) }, img, el("span", { text: s.label }));
    picture(s.image_url).then((url) => { img.src = url; }).catch(showError);
    return button;
  }));
}

/** Wires the file picker and dropping a file anywhere on the page. */
export function wire(look) {
  const pickFile = (file) => {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) { showError(`${file.name} is not an image`); return; }
    press(null);
    look(file, file.name).catch(showError);
  };
  $("file").addEventListener("change", (e) => pickFile(e.target.files[0]));
  const drop = $("drop");
  for (const kind of ["dragenter", "dragover"]) document.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    pickFile([...(e.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/")) || e.dataTransfer?.files[0]);
  });
}
