// The overview view: one heatmap per run for the chosen metric (or phase), the skipped
// parameters of each run, and the files that could not be read.

import { Latest, mapLimited } from "./api.js";
import { clear, h, setOptions } from "./dom.js";
import { drawHeatmap } from "./heatmap.js";
import * as store from "./store.js";

export const PHASE_OPTION = "phase";

function runMeta(run) {
  const parts = [run.kind, run.framework, `${run.layers} layers`, `${run.snapshots} snapshots`];
  return parts.filter((p) => p !== null && p !== undefined).join(" · ");
}

function skippedList(skipped) {
  if (!skipped || skipped.length === 0) return null;
  return h(
    "div",
    { class: "skipped-box" },
    h("div", { class: "skipped-title", text: `${skipped.length} parameter(s) not analyzed` }),
    h("ul", { class: "skipped" }, skipped.map((p) => h("li", {}, h("code", { text: p.name }), " — ", p.reason ?? ""))),
  );
}

/**
 * Builds the overview view. `onCellClick(runName, layerName, snapshot)` is called when a
 * heatmap cell is clicked. Returns {element, refresh}; refresh() redraws from the store.
 */
export function createOverview({ onCellClick }) {
  const metricSelect = h("select", { id: "metric" });
  const summary = h("span", { class: "note", id: "overview-summary" });
  const unreadableList = h("ul", { id: "unreadable" });
  const unreadableBox = h("div", { class: "unreadable-box", hidden: true }, h("h3", { text: "Files that could not be read" }), unreadableList);
  const runsBox = h("div", { id: "run-heatmaps" });
  const element = h(
    "div",
    { id: "view-overview", class: "view" },
    h("div", { class: "toolbar" }, h("label", { for: "metric", text: "metric" }), metricSelect, summary),
    unreadableBox,
    runsBox,
  );
  const latest = new Latest();
  const drawn = new Map(); // run name -> {body, data, mode, metric}: to redraw on resize

  function requestMetric() {
    const choice = metricSelect.value;
    return choice === PHASE_OPTION ? store.runs().default_metric : choice;
  }

  // Sections are kept across redraws (reload, metric change): a heatmap stays on screen until
  // its new data arrives, so the page does not jump while live runs are re-read.
  const sections = new Map(); // run name -> {section, meta, body, skippedSlot}

  function sectionFor(run) {
    let entry = sections.get(run.name);
    if (!entry) {
      const meta = h("span", { class: "run-meta" });
      const body = h("div", { class: "heatmap-body" }, h("p", { class: "note loading", text: "loading…" }));
      const skippedSlot = h("div", { class: "skipped-slot" });
      const title = h("h2", { class: "run-title" }, h("span", { class: "run-name", text: run.name }), meta);
      const section = h("section", { class: "run-heatmap", "data-run": run.name }, title, body, skippedSlot);
      entry = { section, meta, body, skippedSlot };
      sections.set(run.name, entry);
    }
    entry.meta.textContent = runMeta(run);
    return entry;
  }

  async function drawAll() {
    const ticket = latest.take();
    const { runs } = store.runs();
    const choice = metricSelect.value;
    const mode = choice === PHASE_OPTION ? "phase" : "value";
    const metric = requestMetric();
    const names = new Set(runs.map((run) => run.name));
    for (const name of [...sections.keys()]) {
      if (!names.has(name)) {
        sections.delete(name);
        drawn.delete(name);
      }
    }
    if (runs.length === 0) {
      runsBox.replaceChildren(h("p", { class: "note", text: "No run with spectra was found in the log directory." }));
      return;
    }
    runsBox.replaceChildren(...runs.map((run) => sectionFor(run).section));
    await mapLimited(runs, store.FETCH_LIMIT, async (run) => {
      const { body, skippedSlot } = sectionFor(run);
      try {
        const data = await store.overview(run.name, metric);
        if (!latest.isCurrent(ticket)) return;
        const click = (i, j) => onCellClick(run.name, data.layers[i], data.snapshots[j]);
        drawHeatmap(body, data, { mode, metric: choice, onCellClick: click });
        drawn.set(run.name, { body, data, mode, metric: choice, click });
        skippedSlot.replaceChildren(...[skippedList(data.skipped)].filter(Boolean));
      } catch (error) {
        if (!latest.isCurrent(ticket)) return;
        drawn.delete(run.name);
        body.replaceChildren(h("p", { class: "run-error", text: error.message }));
        skippedSlot.replaceChildren();
      }
    });
  }

  function refresh() {
    const answer = store.runs();
    const previous = metricSelect.value;
    const options = answer.metrics.map((m) => ({ value: m, label: m }));
    options.push({ value: PHASE_OPTION, label: "phase (categorical)" });
    setOptions(metricSelect, options, previous || answer.default_metric);
    if (!previous && answer.default_metric) metricSelect.value = answer.default_metric;
    summary.textContent = `${answer.runs.length} run(s)`;
    clear(unreadableList);
    for (const item of answer.unreadable) {
      unreadableList.append(h("li", {}, h("code", { text: item.name }), " — ", item.reason ?? ""));
    }
    unreadableBox.hidden = answer.unreadable.length === 0;
    return drawAll();
  }

  metricSelect.addEventListener("change", () => drawAll());
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const { body, data, mode, metric, click } of drawn.values()) {
        drawHeatmap(body, data, { mode, metric, onCellClick: click });
      }
    }, 150);
  });
  return { element, refresh };
}
