// int8 versions beside their float versions: which version is the other precision of the one
// on show, how bad a layer's error is, the bars of the per-layer error, and the error between
// two maps of one channel on the current image. Pure: no DOM, no page state.

/** The ready version of `name` at the other precision of `version`, from GET /v1/models's
 * `models`: an int8 version's float version (its `quantized_from`), a float version's newest
 * int8 version. {version, precision} or null when none is ready. */
export function twinOf(models, name, version) {
  const model = models.find((m) => m.name === name);
  if (!model) return null;
  const ready = model.versions.filter((v) => v.state === "ready");
  const self = ready.find((v) => v.version === version);
  if (!self) return null;
  if (self.precision === "int8") {
    const original = ready.find((v) => v.version === self.quantized_from);
    return original ? { version: original.version, precision: original.precision ?? "float32" } : null;
  }
  const quantized = ready.filter((v) => v.precision === "int8" && v.quantized_from === version)
    .sort((a, b) => b.version - a.version)[0];
  return quantized ? { version: quantized.version, precision: "int8" } : null;
}

/** The gate's top-1 agreement over `images` judged images, as the page says it: `share`
 * rounded down, so that a disagreement is never rounded away (0.997 is "99.7%", 0.9995 is
 * "99.9%", never "100%"), and `same`, the images on which both versions agree. */
export function agreementFigures(agreement, images) {
  const same = Math.round(agreement * images);
  const share = same >= images ? "100" : (Math.floor((1000 * same) / images) / 10).toFixed(1);
  return { share: `${share}%`, same };
}

/** An SQNR in dB in words: 30 dB and up "close" (the int8 values within about 3% of the float
 * ones), 20 to 30 "noticeable", below 20 "large" (errors of 10% and more); null: identical. */
export function severity(db) {
  if (db === null || db === undefined) return "identical";
  if (db >= 30) return "close";
  return db >= 20 ? "noticeable" : "large";
}

/** The bars' fixed scale, so that models compare: an empty bar at 60 dB (an error of 0.1%), a
 * full one at 10 dB (32%); linear in dB, as the error's order of magnitude. */
export const BAR_SCALE_DB = [60, 10];

/** One bar per row of a quantization answer's `layers`: {name, db, relative, fraction (0..1 on
 * BAR_SCALE_DB: longer is worse), severity, worstChannel, worstDb, output (the class scores),
 * float (one of the answer's `float_layers`: its nodes stayed float32; its error is what it
 * inherits)}. */
export function errorBars(rows, floatLayers = []) {
  const [none, full] = BAR_SCALE_DB;
  const kept = new Set(floatLayers);
  return rows.map((r, i) => ({
    name: r.name, db: r.sqnr_db, relative: r.relative_error,
    fraction: r.sqnr_db === null ? 0 : Math.min(1, Math.max(0, (none - r.sqnr_db) / (none - full))),
    severity: severity(r.sqnr_db), worstChannel: r.worst_channel, worstDb: r.worst_channel_sqnr_db,
    output: i === rows.length - 1, float: kept.has(r.name),
  }));
}

/** The caption under a layer's map from the int8 version: which version, and whether the export
 * kept that layer float32 (one of the answer's `float_layers`). */
export function int8Caption(version, layer, floatLayers = []) {
  return floatLayers.includes(layer) ? `int8 · v${version} (kept float32)` : `int8 · v${version}`;
}

/** What the card says of a layer the export kept float32: its own arithmetic is float, so what
 * differs came in through the int8 layers before it ("" for any other layer). */
export function keptFloatNote(layer, floatLayers = []) {
  return floatLayers.includes(layer)
    ? " The int8 version computes this layer in float32 (the export kept it so): what differs came in through the int8 layers before it."
    : "";
}

/** 10 log10(sum a^2 / sum (a - b)^2) over two equal-length arrays: b's error against a, in dB;
 * null where they are equal, -Infinity where a is all zeros and b is not. */
export function sqnr(a, b) {
  if (a.length !== b.length) throw new Error(`${a.length} values against ${b.length}`);
  let signal = 0, noise = 0;
  for (let i = 0; i < a.length; i++) { signal += a[i] * a[i]; noise += (a[i] - b[i]) ** 2; }
  if (noise === 0) return null;
  return signal === 0 ? -Infinity : 10 * Math.log10(signal / noise);
}

/** The speed the export timed, in words: "3.9× faster" or "0.5× (slower)" at the largest batch. */
export function speedText(speed) {
  if (!speed?.length) return null;
  const last = speed[speed.length - 1];
  const ratio = last.float_seconds / last.int8_seconds;
  return `${ratio.toFixed(1)}× ${ratio >= 1 ? "faster" : "(slower)"} than float at batch ${last.batch}`;
}
