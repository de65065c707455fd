// What the layer catalogue says about each explanation method for the model on show, as far
// as it says anything: `explanations` always has {methods, default_method, default_layer,
// unavailable}; since issue 21 also `default_reason` (why the default is the default),
// `not_recommended` ([{method, beats_random_share, images, why}]) and `measured` (the export's
// measurements, {methods: [{method, images, beats_random, share, median_seconds, ...}],
// reason}, or null). This module reads what is there and tolerates what is not (an older
// server, another shape of the same facts). Pure.

/** A share below this is "not recommended" when the catalogue measured it but did not say. */
export const RECOMMENDED_SHARE = 0.8;

const LISTS = [["measured", "methods"], ["measured"], ["measurements"], ["survey", "methods"], ["recommendations"]];

function measurements(block) {
  const found = [];
  for (const path of LISTS) {
    const list = path.reduce((v, key) => v?.[key], block);
    if (Array.isArray(list)) found.push(...list.filter((m) => m && typeof m.method === "string"));
  }
  return found;
}

/**
 * {notes, reason}: `notes[method]` = {share, images, seconds, recommended, why} for each
 * method the catalogue measured or flagged (share null where only flagged, why null where
 * not said), `reason` why the default is the default (null when not said).
 */
export function methodNotes(block) {
  const notes = {};
  for (const m of measurements(block)) {
    const share = typeof m.share === "number" ? m.share
      : typeof m.beats_random === "number" && m.images ? m.beats_random / m.images : null;
    const said = typeof m.recommended === "boolean" ? m.recommended : null;
    notes[m.method] = { share, images: m.images ?? null, seconds: m.median_seconds ?? m.seconds ?? null,
                        recommended: said ?? (share == null ? true : share >= RECOMMENDED_SHARE), why: null };
  }
  const flagged = block?.not_recommended;
  if (Array.isArray(flagged)) {
    for (const f of flagged) {
      const method = typeof f === "string" ? f : f?.method;
      if (typeof method !== "string") continue;
      const said = typeof f === "object" ? [f.share, f.beats_random_share].find((v) => typeof v === "number") : undefined;
      const share = said ?? notes[method]?.share ?? null;
      notes[method] = { ...(notes[method] || { images: null, seconds: null }), share, recommended: false,
                        why: typeof f === "object" && typeof f.why === "string" ? f.why : null };
      if (typeof f === "object" && typeof f.images === "number") notes[method].images = f.images;
    }
  }
  const reason = [block?.default_reason, block?.reason, block?.measured?.reason, block?.survey?.reason]
    .find((r) => typeof r === "string" && r) ?? null;
  return { notes, reason };
}

/** An option's text: "rise · beats random on 62% · not recommended". */
export function methodLabel(method, note, isDefault = false) {
  const parts = [isDefault ? `${method} (default)` : method];
  if (note?.share != null) parts.push(`beats random on ${Math.round(100 * note.share)}%`);
  if (note && !note.recommended) parts.push("not recommended");
  return parts.join(" · ");
}
