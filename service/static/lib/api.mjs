// The explorer's client for this server's v1 API. Pure: `fetch`, the key and what to do on
// a 401 are handed in, so node's test runner drives it with a fake fetch.

/** A refused or failed call: the HTTP status and the server's `{"error": "..."}` message. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }
}

export const UNAUTHORIZED = "this server needs an API key; enter one above";

/** The request's headers, with `Authorization: Bearer <key>` when there is a key. */
export function authHeaders(key, extra = {}) {
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/**
 * A client: `request(path, options)` resolves to the Response when it is ok and throws an
 * ApiError otherwise (the message from the body's `error`, else the status text); a 401
 * calls `onUnauthorized()` first. `json` and `blob` read the body.
 *   fetch: the fetch to call; key: () => the API key or null; onUnauthorized: () => void.
 */
export function createClient({ fetch, key = () => null, onUnauthorized = () => {} }) {
  async function request(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(key(), options.headers) });
    if (response.status === 401) {
      onUnauthorized();
      throw new ApiError(401, UNAUTHORIZED);
    }
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error ?? message; } catch { /* not JSON */ }
      throw new ApiError(response.status, message);
    }
    return response;
  }
  return {
    request,
    json: async (path, options) => (await request(path, options)).json(),
    blob: async (path, options) => (await request(path, options)).blob(),
  };
}

/**
 * Pictures by path -> a URL to show them (`toUrl(blob)`, e.g. URL.createObjectURL), each
 * fetched once through the client (so with the key) and kept: the versioned URLs are
 * immutable on the server. A failed fetch is forgotten, so the next call tries again.
 */
export function pictureCache(client, toUrl) {
  const made = new Map();
  return (path) => {
    if (!made.has(path)) {
      const url = client.blob(path).then(toUrl);
      url.catch(() => made.delete(path));
      made.set(path, url);
    }
    return made.get(path);
  };
}

const name = encodeURIComponent;

/** Every path the page asks for, in one place. `base` is a version's own path (versionPath). */
export const paths = {
  models: () => "/v1/models",
  model: (model, version) => `/v1/models/${name(model)}` + (version ? `/versions/${version}` : ""),
  versionPath: (model, version) => `/v1/models/${name(model)}/versions/${version}`,
  // The layer catalogue: layers, explanation methods and the colour maps (see colormap.mjs).
  catalogue: (model, version) => `/v1/models/${name(model)}/layers?version=${version}`,
  samples: (base) => `${base}/samples`,
  // The class scores and the maps of the named layers only (comma separated; none: no maps).
  predict: (base, topK, layers = []) => `${base}/predict?top_k=${topK}`
    + (layers.length ? `&layers=${layers.map(name).join(",")}` : "") + "&encoding=npy&dtype=float16",
  // An int8 version's record: the gate's figures and every layer's error (404 for float32).
  quantization: (base) => `${base}/quantization`,
  explain: (base, query) => `${base}/explain?${new URLSearchParams(query)}`,
  channel: (base, layer, channel) => `${base}/layers/${name(layer)}/channels/${channel}`,
  filter: (base, layer, channel) => `${base}/layers/${name(layer)}/channels/${channel}/filter`,
  filtersPng: (model, version, layer, state) =>
    `/v1/models/${name(model)}/layers/${name(layer)}/filters.png?version=${version}&state=${state}`,
};
