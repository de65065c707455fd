// This page's API client (lib/api.mjs) bound to the browser: the window's fetch, the API key
// kept in this tab's sessionStorage (never in a URL or a cookie), the key prompt on a 401,
// and pictures shown from blobs fetched with the key.

import { createClient, pictureCache } from "../lib/api.mjs";
import { $ } from "./dom.mjs";

const KEY = "convscope-key";

export const storedKey = () => sessionStorage.getItem(KEY);
export const storeKey = (key) => sessionStorage.setItem(KEY, key);

/** The prompt (#keyform) is open: the page waits for a key before it polls again. */
export const askingForKey = () => !$("keyform").hidden;

export const client = createClient({
  fetch: (...args) => window.fetch(...args),
  key: storedKey,
  onUnauthorized: () => { $("keyform").hidden = false; },
});

export const getJSON = client.json;

/** path -> a promise of an object URL for the picture there, fetched once. */
export const picture = pictureCache(client, (blob) => URL.createObjectURL(blob));
