// What the page asks the server for, and when: the feature maps of the layers it shows (a
// closed block's output, every layer of an open one), as float16 .npy, in requests of bounded
// size, each layer once per image. A deep net's maps at 224 px are tens of MB: the rows on
// screen come first, the others when they come near it (views/blocks.mjs), a block's inner
// layers when it is opened. Pure: the fetching is handed in, so node's runner drives it.

/** Bytes per value of the maps the page asks for (`dtype=float16`). */
export const FLOAT16 = 2;

/** One image's map of a layer, in bytes as float16 (output_shape [N, C, H, W] or [N, C]). */
export const mapBytes = (layer) => layer.output_shape.slice(1).reduce((a, b) => a * b, 1) * FLOAT16;

/** Bytes of maps one request asks for at most (a larger layer goes alone): a few hundred ms
 * of the server's encoding and the page's decoding, so the first rows show quickly. */
export const REQUEST_BYTES = 4 * 1024 * 1024;
/** Characters of layer names in one request's query (the server takes 32 KiB of head). */
export const REQUEST_CHARS = 4000;

/** The layers the rows show, in page order, each once: a closed row its output, an open
 * one all of its layers (an open stage what its rows show). `isOpen(row)` says which. */
export function shownLayers(rows, isOpen = () => false) {
  const names = [];
  const add = (list) => {
    for (const row of list) {
      if (!isOpen(row)) { if (!names.includes(row.output)) names.push(row.output); }
      else if (row.children) add(row.children);
      else for (const name of row.layers) if (!names.includes(name)) names.push(name);
    }
  };
  add(rows);
  return names;
}

/** Names, in order, cut into requests: each at most `budget` bytes of maps (a layer larger
 * than that alone) and `chars` characters of names. */
export function batches(names, bytesOf, { budget = REQUEST_BYTES, chars = REQUEST_CHARS } = {}) {
  const out = [];
  let current = [], bytes = 0, length = 0;
  for (const name of names) {
    const size = bytesOf(name), more = encodeURIComponent(name).length + 1;
    if (current.length && (bytes + size > budget || length + more > chars)) {
      out.push(current);
      current = []; bytes = 0; length = 0;
    }
    current.push(name); bytes += size; length += more;
  }
  if (current.length) out.push(current);
  return out;
}

/**
 * The feature maps of one image at a time, asked for as rows need them.
 *   fetchMaps(names) -> Promise of {name: map} (one predict with `layers=names`);
 *   bytesOf(name) -> its size; onLoaded(maps) once per answer for the current image;
 *   onError(error) when a request fails.
 * `reset(loaded)` starts a new image (answers for the old one are dropped), `loaded` the
 * names already there; `track(names, answer)` counts a request made elsewhere (the first,
 * with the classes) as theirs; `want(names)` asks for those not there nor on their way, in
 * batches, at the next microtask (so a scroll's rows go together); `idle()` resolves when
 * nothing is on its way; `pending()` counts the requests on their way.
 */
export function mapQueue({ fetchMaps, bytesOf, onLoaded = () => {}, onError = () => {}, limits = {} }) {
  let generation = 0, have = new Set(), onTheWay = new Set(), waiting = [], scheduled = false, inFlight = 0;
  let settle = [];
  const settled = () => { if (!inFlight && !waiting.length) { for (const resolve of settle) resolve(); settle = []; } };

  function flush() {
    scheduled = false;
    const names = waiting.filter((name) => !have.has(name) && !onTheWay.has(name));  // tracked meanwhile
    waiting = [];
    for (const batch of batches(names, bytesOf, limits)) send(batch);
    settled();
  }

  const send = (batch) => track(batch, fetchMaps(batch));

  function track(batch, answer) {
    const mine = generation;
    for (const name of batch) onTheWay.add(name);
    inFlight++;
    answer.then((maps) => {
      if (mine !== generation) return;
      for (const name of batch) { onTheWay.delete(name); have.add(name); }
      onLoaded(maps);
    }, (error) => {
      if (mine !== generation) return;
      for (const name of batch) onTheWay.delete(name);  // asked for again by the next want
      onError(error);
    }).finally(() => { inFlight--; settled(); });
  }

  return {
    reset(loaded = []) {
      generation++;
      have = new Set(loaded); onTheWay = new Set(); waiting = [];
    },
    /** Names on their way in a request made elsewhere (the first one, with the classes):
     * `answer` resolves to their maps. */
    track(names, answer) { if (names.length) track(names, answer); },
    want(names) {
      for (const name of names) if (!have.has(name) && !onTheWay.has(name) && !waiting.includes(name)) waiting.push(name);
      if (waiting.length && !scheduled) { scheduled = true; queueMicrotask(flush); }
    },
    has: (name) => have.has(name),
    pending: () => inFlight,
    idle: () => new Promise((resolve) => { settle.push(resolve); if (!scheduled) settled(); }),
  };
}
