// The page's one floating tooltip (#tooltip), placed next to the pointer and kept inside the window.

import { h, clear } from "./dom.js";

let tip = null;

export function createTooltip() {
  tip = h("div", { id: "tooltip", role: "tooltip", hidden: true });
  return tip;
}

/** Shows `rows` ([label, value] pairs or plain strings) near client position (x, y). */
export function showTooltip(clientX, clientY, rows) {
  if (!tip) return;
  clear(tip);
  for (const row of rows) {
    if (Array.isArray(row)) {
      tip.append(h("div", { class: "tip-row" }, h("span", { class: "tip-key", text: row[0] }), " ", h("span", { text: row[1] })));
    } else {
      tip.append(h("div", { class: "tip-head", text: row }));
    }
  }
  tip.hidden = false;
  const margin = 14;
  const { width, height } = tip.getBoundingClientRect();
  let left = clientX + margin;
  let top = clientY + margin;
  if (left + width > window.innerWidth - 4) left = Math.max(4, clientX - margin - width);
  if (top + height > window.innerHeight - 4) top = Math.max(4, clientY - margin - height);
  tip.style.left = `${left}px`;
  tip.style.top = `${top}px`;
}

export function hideTooltip() {
  if (tip) tip.hidden = true;
}
