// Entry point of the Spectra dashboard, loaded by TensorBoard in the plugin's iframe: builds the
// page (header, error banner, three views) and switches between the views.

import { clearErrors, createBanner, showError } from "./banner.js";
import { createCompareView } from "./compare_view.js";
import { h } from "./dom.js";
import { createEsdView } from "./esd_view.js";
import { createOverview } from "./overview.js";
import * as store from "./store.js";
import { createTooltip } from "./tooltip.js";

const VIEWS = [
  ["overview", "Overview"],
  ["esd", "ESD explorer"],
  ["compare", "Compare runs"],
];

/** Adds the stylesheet next to this module and waits (briefly) until it applies. */
function loadStyles() {
  const link = h("link", { rel: "stylesheet", href: new URL("./spectra.css", import.meta.url).href });
  const loaded = new Promise((resolve) => {
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);
    setTimeout(resolve, 2000);
  });
  document.head.append(link);
  return loaded;
}

export async function render() {
  await loadStyles();
  document.body.classList.add("spectra");
  let current = "overview";
  const stale = new Set();

  const esd = createEsdView({ isActive: () => current === "esd" });
  const overview = createOverview({
    onCellClick: (run, layer, snapshot) => {
      stale.delete("esd");
      showView("esd");
      esd.open({ run, layer, step: snapshot.step }).catch(showError);
    },
  });
  const compare = createCompareView();
  const views = { overview, esd, compare };

  const buttons = VIEWS.map(([name, label]) => h("button", { type: "button", class: "view-button", "data-view": name, text: label }));
  const reload = h("button", { type: "button", id: "reload", title: "fetch the runs again (live runs grow)", text: "⟳ Reload" });
  const status = h("span", { id: "status", class: "note" });
  const header = h(
    "header",
    { class: "spectra-header" },
    h("span", { class: "brand", text: "Spectra" }),
    h("nav", { class: "view-buttons" }, buttons),
    status,
    reload,
  );
  document.body.append(header, createBanner(), h("main", {}, overview.element, esd.element, compare.element), createTooltip());

  function refreshView(name) {
    stale.delete(name);
    return Promise.resolve(views[name].refresh()).catch(showError);
  }

  function showView(name) {
    current = name;
    for (const [key, view] of Object.entries(views)) view.element.hidden = key !== name;
    for (const button of buttons) {
      const active = button.dataset.view === name;
      button.classList.toggle("active", active);
      button.setAttribute("aria-pressed", String(active));
    }
    if (stale.has(name)) refreshView(name);
  }

  async function loadAll() {
    status.textContent = "loading runs…";
    reload.disabled = true;
    try {
      await store.loadRuns();
      for (const name of Object.keys(views)) stale.add(name);
      status.textContent = `${store.runNames().length} run(s)`;
      await refreshView(current);
    } catch (error) {
      status.textContent = "";
      showError(error, "runs");
    } finally {
      reload.disabled = false;
    }
  }

  for (const button of buttons) button.addEventListener("click", () => showView(button.dataset.view));
  reload.addEventListener("click", () => {
    clearErrors();
    loadAll();
  });
  showView("overview");
  await loadAll();
}
