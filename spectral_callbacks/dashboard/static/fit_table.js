// The side table of the ESD view: the power-law fit, the MP fit, a few norms and the layer's shape.

import { clear, h } from "./dom.js";
import { fmt, num } from "./format.js";

function pick(...values) {
  for (const v of values) if (num(v) !== null) return v;
  return null;
}

/**
 * [key, label, text, hint] rows for an `esd` answer; `hint` (or undefined) says what a count
 * counts where two counts are easily confused.
 */
export function fitRows(esd) {
  const fit = esd.fit || {};
  const mp = esd.mp || {};
  const metrics = esd.metrics || {};
  const info = esd.info || {};
  const status = esd.reason ? `${esd.status}: ${esd.reason}` : esd.status ?? "—";
  return [
    ["alpha", "alpha", fmt(pick(fit.alpha, metrics.alpha))],
    ["D", "D (KS distance)", fmt(pick(fit.D, metrics.D))],
    ["xmin", "xmin", fmt(pick(fit.xmin, metrics.xmin))],
    ["xmax", "xmax", fmt(pick(fit.xmax, metrics.xmax))],
    ["num_pl_spikes", "num_pl_spikes", fmt(pick(fit.num_pl_spikes, metrics.num_pl_spikes)), "eigenvalues in the fitted tail"],
    ["phase", "phase", esd.phase ?? "—"],
    ["status", "status", status],
    ["lambda_plus", "lambda_plus (MP edge)", fmt(pick(mp.lambda_plus, metrics.lambda_plus))],
    ["num_spikes", "num_spikes", fmt(pick(mp.num_spikes, metrics.num_spikes)), "beyond λ+ and its Tracy-Widom margin"],
    ["stable_rank", "stable_rank", fmt(num(metrics.stable_rank))],
    ["spectral_norm", "spectral_norm", fmt(num(metrics.spectral_norm))],
    ["N", "N", fmt(num(info.N))],
    ["M", "M", fmt(num(info.M))],
    ["Q", "Q = N / M", fmt(num(info.Q))],
  ];
}

/** Fills `table` with the rows of an `esd` answer; each row is tr[data-key=KEY] > th + td. */
export function fillFitTable(table, esd) {
  clear(table);
  const body = h("tbody");
  for (const [key, label, text, hint] of fitRows(esd)) {
    const head = h("th", { scope: "row" }, label, hint ? h("span", { class: "row-hint", text: hint }) : null);
    const row = h("tr", { "data-key": key }, head, h("td", { text }));
    if (key === "status" && esd.status && esd.status !== "ok") row.classList.add(`status-${esd.status}`);
    body.append(row);
  }
  table.append(body);
}
