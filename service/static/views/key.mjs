// The API key prompt (#keyform): shown by the client on a 401 (ui/server.mjs); a key entered
// here is kept in this tab's sessionStorage and the page starts over with it.

import { $, clearError } from "../ui/dom.mjs";
import { storeKey } from "../ui/server.mjs";

/** Wires the form: on submit, keep the key, close the prompt and call `then()`. */
export function wire(then) {
  $("keyform").addEventListener("submit", (e) => {
    e.preventDefault();
    storeKey($("key").value.trim());
    $("key").value = ""; $("keyform").hidden = true; clearError();
    then();
  });
}
