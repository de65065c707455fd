// Numbers as the page writes them. Pure: no DOM, no page state.

/** A value in at most three significant digits; whole numbers from 100 up, and 0 as "0". */
export const fmt = (v) => (Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3));

/** A probability as a percentage: one decimal, none at the ends (100%, 0%) where it would mislead. */
export const pct = (p) => (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";
