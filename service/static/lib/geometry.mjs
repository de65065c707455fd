// A layer's geometry from the model's metadata (GET /v1/models/{name}/versions/{v}: `layers`,
// each with `output_shape` [N, C, H, W] or [N, C], `receptive_field`, `stride`,
// `receptive_field_offset`, and where rows and columns differ `receptive_field_hw`,
// `stride_hw`, `receptive_field_offset_hw` [rows, columns]; `receptive_field_bounds`
// [left, top, right, bottom] where the layer sees less than the image: docs/artifact.md,
// "Geometry"). Pure.

/** Whether the layer's output is a map (C x H x W) rather than a vector of units. */
export const spatial = (layer) => layer.output_shape.length === 4;

/** [C, H, W]; a vector of C units counts as C maps of 1 x 1. */
export const dims = (layer) => (spatial(layer) ? layer.output_shape.slice(1) : [layer.output_shape[1], 1, 1]);

/** [rows, columns], each {rf, stride, offset}: the per-axis fields where the layer has them,
 * else the square ones; null where the metadata does not know them. */
export function fieldAxes(layer) {
  const { receptive_field_hw: rfs, stride_hw: strides, receptive_field_offset_hw: offsets } = layer;
  if (rfs != null && strides != null && offsets != null) {
    return [0, 1].map((i) => ({ rf: rfs[i], stride: strides[i], offset: offsets[i] }));
  }
  const rf = layer.receptive_field, stride = layer.stride, offset = layer.receptive_field_offset;
  if (rf == null || stride == null || offset == null) return null;
  return [{ rf, stride, offset }, { rf, stride, offset }];
}

const pair = (a, b) => (a === b ? `${a}` : `${a}×${b}`);

/** "C × H × W · receptive field R×R px · stride S" (rows × columns where they differ), as far
 * as the metadata knows. */
export function geometryText(layer) {
  const [c, h, w] = dims(layer);
  const parts = [spatial(layer) ? `${c} × ${h} × ${w}` : `${c} units`];
  const axes = spatial(layer) ? fieldAxes(layer) : null;
  if (axes) {
    parts.push(`receptive field ${axes[0].rf}×${axes[1].rf} px`, `stride ${pair(axes[0].stride, axes[1].stride)}`);
  } else {
    if (layer.receptive_field != null) parts.push(`receptive field ${layer.receptive_field}×${layer.receptive_field} px`);
    if (layer.stride != null) parts.push(`stride ${layer.stride}`);
  }
  return parts.join(" · ");
}

/** The input pixels that unit (y, x) of the layer sees, clipped to an H x W input and to the
 * layer's bounds: {left, top, right, bottom} (right and bottom exclusive), or null where the
 * metadata has no receptive field for the layer or the unit sees only padding. */
export function receptiveBox(layer, y, x, [H, W]) {
  if (!spatial(layer)) return null;
  if (layer.receptive_field != null && layer.stride == null && layer.stride_hw == null) {
    return { left: 0, top: 0, right: W, bottom: H };  // not a map (a global pool's C x 1 x 1): the whole image
  }
  const axes = fieldAxes(layer);
  if (!axes) return null;
  const [rows, cols] = axes;
  const [boundLeft, boundTop, boundRight, boundBottom] = layer.receptive_field_bounds ?? [0, 0, W, H];
  const top = rows.offset + y * rows.stride, left = cols.offset + x * cols.stride;
  const box = {
    left: Math.max(0, boundLeft, left), top: Math.max(0, boundTop, top),
    right: Math.min(W, boundRight, left + cols.rf), bottom: Math.min(H, boundBottom, top + rows.rf),
  };
  return box.right > box.left && box.bottom > box.top ? box : null;
}

/** The same, short, for a row: "128×8×8 · field 99 px · stride 8". */
export function shortGeometryText(layer) {
  const [c, h, w] = dims(layer);
  const parts = [spatial(layer) ? `${c}×${h}×${w}` : `${c} units`];
  const axes = spatial(layer) ? fieldAxes(layer) : null;
  if (axes) parts.push(`field ${pair(axes[0].rf, axes[1].rf)} px`, `stride ${pair(axes[0].stride, axes[1].stride)}`);
  else if (layer.receptive_field != null) parts.push(`field ${layer.receptive_field} px`);
  return parts.join(" · ");
}
