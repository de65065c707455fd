// Small helpers over the page's document: find, make, report.

export const $ = (id) => document.getElementById(id);

/** An element: `class`, `text`, `on<event>` handlers, other attributes (true -> present,
 * false/null/undefined -> absent), then its children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** An error in the page's alert line (#error); an aborted request is no error. */
export function showError(error) {
  if (error && error.name === "AbortError") return;
  $("error").textContent = error instanceof Error ? error.message : String(error);
}

export const clearError = () => { $("error").textContent = ""; };

/** `fn` as an event handler: whatever it throws or rejects with goes to showError. */
export const guarded = (fn) => (...args) => Promise.resolve().then(() => fn(...args)).catch(showError);

/** Resolves once the browser has laid out and painted what the page just drew. */
export const painted = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

/** The layer's card in the overview (section 3) that is on show: its card in an open block
 * (or a chain), else a closed block's strip of it; undefined when neither is. */
export const layerCard = (layer) => [...document.querySelectorAll(`.layer[data-layer="${CSS.escape(layer)}"]`)]
  .find((card) => !card.closest("[hidden]"));
