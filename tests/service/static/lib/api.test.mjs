// service/static/lib/api.mjs: the client over a fake fetch that records what it was asked.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, authHeaders, createClient, paths, pictureCache, UNAUTHORIZED } from "../../../../service/static/lib/api.mjs";

/** A fetch that answers from `answer(path, options)` and records every call. */
function fakeFetch(answer) {
  const calls = [];
  const fetch = async (path, options) => { calls.push({ path, options }); return answer(path, options); };
  return { fetch, calls };
}
const json = (body, status = 200, statusText = "OK") =>
  new Response(JSON.stringify(body), { status, statusText, headers: { "Content-Type": "application/json" } });

test("the key goes in a Bearer header, beside the caller's own headers; no key, no header", () => {
  assert.deepEqual(authHeaders("k-123", { "Content-Type": "image/png" }), { "Content-Type": "image/png", Authorization: "Bearer k-123" });
  assert.deepEqual(authHeaders(null, { "Content-Type": "image/png" }), { "Content-Type": "image/png" });
  assert.deepEqual(authHeaders("", undefined), {});
});

test("a request carries the key the client reads at call time, and its options", async () => {
  const { fetch, calls } = fakeFetch(() => json({ models: [] }));
  let key = null;
  const client = createClient({ fetch, key: () => key });
  assert.deepEqual(await client.json("/v1/models"), { models: [] });
  key = "k-456";
  const body = new Uint8Array([1, 2]);
  await client.request("/v1/models/m/predict", { method: "POST", body, headers: { "Content-Type": "image/png" } });
  assert.deepEqual(calls.map((c) => c.path), ["/v1/models", "/v1/models/m/predict"]);
  assert.deepEqual(calls[0].options.headers, {});
  assert.deepEqual(calls[1].options, { method: "POST", body, headers: { "Content-Type": "image/png", Authorization: "Bearer k-456" } });
});

test("a 401 asks for a key and fails with the page's message", async () => {
  let asked = 0;
  const client = createClient({ fetch: async () => json({ error: "missing API key" }, 401, "Unauthorized"), onUnauthorized: () => { asked++; } });
  await assert.rejects(client.json("/v1/models"), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 401);
    assert.equal(error.detail, UNAUTHORIZED);
    return true;
  });
  assert.equal(asked, 1);
});

test("a refusal fails with the server's {\"error\": ...} message, or the status text when the body is not JSON", async () => {
  const client = createClient({ fetch: async (path) => (path === "/json"
    ? json({ error: "no layer 'conv9'; valid: features.1, features.3" }, 404, "Not Found")
    : new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" })) });
  await assert.rejects(client.request("/json"), { name: "ApiError", status: 404, detail: "no layer 'conv9'; valid: features.1, features.3",
    message: "404: no layer 'conv9'; valid: features.1, features.3" });
  await assert.rejects(client.request("/html"), { status: 502, detail: "Bad Gateway", message: "502: Bad Gateway" });
});

test("a picture is fetched once per path, and a failed one is tried again", async () => {
  let failures = 1;
  const { fetch, calls } = fakeFetch(async (path) => {
    if (path === "/flaky" && failures-- > 0) return json({ error: "busy" }, 503, "Service Unavailable");
    return new Response(new Blob([path]));
  });
  const made = [];
  const picture = pictureCache(createClient({ fetch }), async (blob) => { made.push(await blob.text()); return `blob:${made.length}`; });
  assert.equal(await picture("/a"), "blob:1");
  assert.equal(await picture("/a"), "blob:1");
  assert.equal(await picture("/b"), "blob:2");
  await assert.rejects(picture("/flaky"), { status: 503 });
  assert.equal(await picture("/flaky"), "blob:3");
  assert.deepEqual(calls.map((c) => c.path), ["/a", "/b", "/flaky", "/flaky"]);
  assert.deepEqual(made, ["/a", "/b", "/flaky"]);
});

test("paths: names are escaped; a version pins the immutable base", () => {
  assert.equal(paths.model("digits tiny/vgg"), "/v1/models/digits%20tiny%2Fvgg");
  assert.equal(paths.model("m", 3), "/v1/models/m/versions/3");
  const base = paths.versionPath("m", 3);
  assert.equal(base, "/v1/models/m/versions/3");
  assert.equal(paths.catalogue("m", 3), "/v1/models/m/layers?version=3");
  assert.equal(paths.predict(base, 10), "/v1/models/m/versions/3/predict?top_k=10&encoding=npy&dtype=float16");
  assert.equal(paths.predict(base, 2, ["layer1.0", "features.denseblock1.denselayer2.conv#2"]),
    "/v1/models/m/versions/3/predict?top_k=2&layers=layer1.0,features.denseblock1.denselayer2.conv%232&encoding=npy&dtype=float16");
  assert.equal(paths.channel(base, "layer1.0.conv#1", 7), "/v1/models/m/versions/3/layers/layer1.0.conv%231/channels/7");
  assert.equal(paths.filter(base, "features.3", 0), "/v1/models/m/versions/3/layers/features.3/channels/0/filter");
  assert.equal(paths.filtersPng("m", 3, "features.0", "initial"), "/v1/models/m/layers/features.0/filters.png?version=3&state=initial");
  assert.equal(paths.explain(base, new URLSearchParams([["encoding", "png"], ["method", "grad-cam"], ["target", "4"]])),
    "/v1/models/m/versions/3/explain?encoding=png&method=grad-cam&target=4");
});
