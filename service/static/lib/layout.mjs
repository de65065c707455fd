// Layout maths of the page: tile sizes, how many tiles a row holds, where a box sits on a
// picture, how strongly the explanation's heat covers the image. Pure: numbers in, numbers out.

/** A channel's tile in a layer's card, in CSS px, by the map's height: small maps small. */
export const tileSize = (h) => (h === 1 ? 22 : h >= 24 ? 56 : h >= 12 ? 46 : 38);

/** A tile in a closed block's one-line strip, in CSS px. */
export const STRIP_TILE = 40;
/** What a tile adds around its picture (2 px of border each side) and the gap between tiles. */
export const TILE_FRAME = 4;
export const TILE_GAP = 3;

/** How many tiles of `tile` px fit on one line `width` px wide (at least one). */
export function stripCount(width, tile = STRIP_TILE, frame = TILE_FRAME, gap = TILE_GAP) {
  return Math.max(1, Math.floor((width + gap) / (tile + frame + gap)));
}

/** A box {left, top, right, bottom} (input pixels, right and bottom exclusive) as
 * percentages of an H x W picture: {left, top, width, height}. */
export function boxPercent(box, [H, W]) {
  return {
    left: (100 * box.left) / W, top: (100 * box.top) / H,
    width: (100 * (box.right - box.left)) / W, height: (100 * (box.bottom - box.top)) / H,
  };
}

/** The whole factor that brings an H x W picture to at least `target` px on its long side. */
export const upscale = (H, W, target = 224) => Math.max(1, Math.ceil(target / Math.max(H, W)));

/** The explanation's opacity control, as a fraction (0..1) of its 0..100 slider. */
export const DEFAULT_OPACITY = 0.8;

/**
 * How opaque the heat is over one pixel whose map value is `level` (0..1), at the control's
 * `opacity` (0..1): the square root of the level, so the middle of the map shows clearly
 * (a linear fade left most of a coarse map faint), scaled by the control; no evidence, no
 * heat, and at full opacity the strongest evidence hides the image.
 */
export function overlayAlpha(level, opacity) {
  const l = Number.isFinite(level) ? Math.min(1, Math.max(0, level)) : 0;
  return Math.min(1, Math.max(0, opacity)) * Math.sqrt(l);
}

/** Whether a box on screen ({top, bottom} from getBoundingClientRect) is within `margin` px
 * of a viewport `height` px tall: its row asks for its maps. */
export const nearScreen = ({ top, bottom }, height, margin) => bottom >= -margin && top <= height + margin;

/** The pixels a picture of `size` px needs from `n` values along one axis (the screen's
 * pixels: `size` times the device pixel ratio, never more than there are values). */
export const samples = (n, size, ratio = 1) => Math.max(1, Math.min(n, Math.ceil(size * ratio)));

/** For each of `out` pixels along an axis of `n` values, the value at its centre (nearest):
 * what a pixelated picture of the full map would show at that size, painted at that size. */
export function sampleIndex(n, out) {
  const index = new Int32Array(out);
  for (let i = 0; i < out; i++) index[i] = Math.min(n - 1, Math.floor(((i + 0.5) * n) / out));
  return index;
}
