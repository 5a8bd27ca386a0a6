// The page's error banner (#error): shows backend and request errors until dismissed.

import { h, clear } from "./dom.js";

let banner = null;

export function createBanner() {
  banner = h("div", { id: "error", role: "alert", hidden: true });
  return banner;
}

/**
 * Shows a message (an Error or a string) in the banner; duplicates don't stack. `source` names
 * what failed (e.g. "compare"), so a later success of the same source can take it back.
 */
export function showError(error, source = "") {
  if (!banner) return;
  const text = error instanceof Error ? error.message : String(error);
  if ([...banner.querySelectorAll(".error-text")].some((node) => node.textContent === text)) return;
  const close = h("button", { class: "dismiss", type: "button", title: "dismiss", text: "×" });
  const line = h("div", { class: "error-line", "data-source": source }, h("span", { class: "error-text", text }), close);
  close.addEventListener("click", () => remove(line));
  banner.append(line);
  banner.hidden = false;
}

function remove(line) {
  line.remove();
  if (!banner.querySelector(".error-line")) banner.hidden = true;
}

/** Takes back the messages of one source (after it succeeded). */
export function clearError(source) {
  if (!banner) return;
  for (const line of [...banner.querySelectorAll(".error-line")]) {
    if (line.dataset.source === source) remove(line);
  }
}

/** Takes back every message. */
export function clearErrors() {
  if (!banner) return;
  clear(banner);
  banner.hidden = true;
}
