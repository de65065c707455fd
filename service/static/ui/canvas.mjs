// Values onto canvases through a colour map's table (lib/colormap.mjs).

import { level, put } from "../lib/colormap.mjs";

/** values (h*w, row-major) -> the canvas's pixels, lo..hi across the table. */
export function paint(canvas, values, h, w, lo, hi, table) {
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(w, h);
  for (let i = 0; i < h * w; i++) put(image.data, i * 4, table, level(values[i], lo, hi));
  ctx.putImageData(image, 0, 0);
}
