// Section 2, left: the input as the model sees it, and the class probabilities.

import { pct } from "../lib/format.mjs";
import { $, el } from "../ui/dom.mjs";
import { state } from "../state.mjs";

/** The image as the model sees it: resized to its input size (no crop), grey for grey models. */
export async function modelView(blob, input) {
  const [h, w] = input.size;
  const bitmap = await createImageBitmap(blob);
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, w, h);
  if (input.color_mode === "L") {
    const image = ctx.getImageData(0, 0, w, h), d = image.data;
    for (let i = 0; i < d.length; i += 4) d[i] = d[i + 1] = d[i + 2] = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
    ctx.putImageData(image, 0, 0);
  }
  return canvas;
}

/** Shows the section before the first answer: the rows below it are where they will stay
 * when the page works out which of them are on screen. */
export const reveal = () => { $("result").hidden = false; };

/** The input, its name and size, and the top five classes with the time it took. */
export function render(timings, ms, layers) {
  $("result").hidden = false;
  const canvas = $("input"), source = state.input;
  canvas.width = source.width; canvas.height = source.height;
  canvas.getContext("2d").drawImage(source, 0, 0);
  const [h, w] = state.meta.input.size;
  $("input-note").textContent = `${state.imageName} · resized to ${w}×${h}${state.meta.input.color_mode === "L" ? ", grey" : ""}`;
  const top = state.probabilities.slice(0, 5);
  $("predictions").replaceChildren(...top.map((p, i) => el("tr", { class: i === 0 ? "best" : "" },
    el("td", { text: p.label }), el("td", { class: "p", text: pct(p.probability) }),
    el("td", {}, el("div", { class: "bar", style: `width:${Math.max(1, 120 * p.probability)}px` })))));
  const all = state.meta.layers.length;
  $("predict-timing").textContent = `class scores and ${layers === all ? `all ${all}` : `${layers} of ${all}`} layers' maps: `
    + `${ms.toFixed(0)} ms (server ${timings.total.toFixed(0)} ms)${layers < all ? "; the others as they come into view" : ""}`;
}
