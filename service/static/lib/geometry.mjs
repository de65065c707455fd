// A layer's geometry from the model's metadata (GET /v1/models/{name}/versions/{v}: `layers`,
// each with `output_shape` [N, C, H, W] or [N, C], `receptive_field`, `stride`,
// `receptive_field_offset`). Pure.

/** Whether the layer's output is a map (C x H x W) rather than a vector of units. */
export const spatial = (layer) => layer.output_shape.length === 4;

/** [C, H, W]; a vector of C units counts as C maps of 1 x 1. */
export const dims = (layer) => (spatial(layer) ? layer.output_shape.slice(1) : [layer.output_shape[1], 1, 1]);

/** "C × H × W · receptive field R×R px · stride S", as far as the metadata knows. */
export function geometryText(layer) {
  const [c, h, w] = dims(layer);
  const parts = [spatial(layer) ? `${c} × ${h} × ${w}` : `${c} units`];
  if (layer.receptive_field != null) parts.push(`receptive field ${layer.receptive_field}×${layer.receptive_field} px`);
  if (layer.stride != null) parts.push(`stride ${layer.stride}`);
  return parts.join(" · ");
}

/** The input pixels that unit (y, x) of the layer sees, clipped to an H x W input:
 * {left, top, right, bottom} (right and bottom exclusive), or null where the metadata has no
 * receptive field for the layer. */
export function receptiveBox(layer, y, x, [H, W]) {
  const rf = layer.receptive_field, stride = layer.stride, offset = layer.receptive_field_offset;
  if (!spatial(layer) || rf == null || stride == null || offset == null) return null;
  return {
    left: Math.max(0, offset + x * stride), top: Math.max(0, offset + y * stride),
    right: Math.min(W, offset + x * stride + rf), bottom: Math.min(H, offset + y * stride + rf),
  };
}
