// The overview view: one heatmap per run for the chosen metric (or phase), the skipped
// parameters of each run, and the files that could not be read.

import { clear, h, setOptions } from "./dom.js";
import { drawHeatmap, heatmapHeight, valueRange } from "./heatmap.js";
import { createLazyLoader } from "./lazy.js";
import * as store from "./store.js";

export const PHASE_OPTION = "phase";
// How far from the viewport a run's heatmap starts loading: two screens above and below.
const LOAD_MARGIN = "200% 0px";

function sameRange(a, b) {
  return a === b || (a !== null && b !== null && a[0] === b[0] && a[1] === b[1]);
}

/** "training · lightning · 4 layers · 13 snapshots", or "post-hoc results · 15 layers · 1 checkpoint(s)". */
function runMeta(run) {
  const posthoc = run.kind === "posthoc";
  const parts = posthoc
    ? ["post-hoc results", `${run.layers} layers`, `${run.snapshots} checkpoint(s)`]
    : [run.kind, run.framework, `${run.layers} layers`, `${run.snapshots} snapshots`];
  return parts.filter((p) => p !== null && p !== undefined).join(" · ");
}

function skippedList(skipped) {
  if (!skipped || skipped.length === 0) return null;
  // folded: most runs leave out only biases and norms, which need no attention
  return h(
    "details",
    { class: "skipped-box" },
    h("summary", { class: "skipped-title", text: `${skipped.length} parameter(s) not analyzed` }),
    h("ul", { class: "skipped" }, skipped.map((p) => h("li", {}, h("code", { text: p.name }), " — ", p.reason ?? ""))),
  );
}

/**
 * Builds the overview view. `onCellClick(runName, layerName, snapshot)` is called when a
 * heatmap cell is clicked. Returns {element, refresh}; refresh() redraws from the store.
 *
 * A run's overview is fetched only when its section comes near the viewport (a log directory may
 * hold many runs of many layers); until then the section keeps the height its heatmap will have.
 * In value mode the heatmaps of all loaded runs share one color range, so that runs (e.g. of a
 * regularization sweep) can be compared by eye, unless "scale each run separately" is checked.
 */
export function createOverview({ onCellClick }) {
  const metricSelect = h("select", { id: "metric" });
  const perRunScale = h("input", { id: "per-run-scale", type: "checkbox" });
  const summary = h("span", { class: "note", id: "overview-summary" });
  const unreadableList = h("ul", { id: "unreadable" });
  const unreadableBox = h("div", { class: "unreadable-box", hidden: true }, h("h3", { text: "Files that could not be read" }), unreadableList);
  const runsBox = h("div", { id: "run-heatmaps" });
  const element = h(
    "div",
    { id: "view-overview", class: "view" },
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "metric", text: "metric" }),
      metricSelect,
      h("label", { class: "check", for: "per-run-scale" }, perRunScale, "scale each run separately"),
      summary,
    ),
    unreadableBox,
    runsBox,
  );

  // Each change of the runs or the metric starts a generation; answers of an older one are dropped.
  let generation = 0;
  // Sections are kept across redraws (reload, metric change): a heatmap stays on screen until
  // its new data arrives, so the page does not jump while live runs are re-read.
  const sections = new Map(); // run name -> {section, meta, body, skippedSlot}
  // run name -> {body, data, mode, choice, click, kind, generation, ownRange, range, handle}
  const drawn = new Map();
  const lazy = createLazyLoader({ limit: store.FETCH_LIMIT, margin: LOAD_MARGIN, load: loadRun });

  function currentChoice() {
    const choice = metricSelect.value;
    const mode = choice === PHASE_OPTION ? "phase" : "value";
    const metric = mode === "phase" ? store.runs().default_metric : choice;
    return { choice, mode, metric };
  }

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

  /** The union of the value ranges of the runs drawn in this generation (null if none). */
  function sharedRange() {
    let lo = Infinity;
    let hi = -Infinity;
    for (const item of drawn.values()) {
      if (item.generation !== generation || item.mode !== "value" || !item.ownRange) continue;
      lo = Math.min(lo, item.ownRange[0]);
      hi = Math.max(hi, item.ownRange[1]);
    }
    return lo <= hi ? [lo, hi] : null;
  }

  function rangeFor(item, shared) {
    return perRunScale.checked ? item.ownRange : shared ?? item.ownRange;
  }

  function drawItem(item) {
    item.handle = drawHeatmap(item.body, item.data, {
      mode: item.mode,
      metric: item.choice,
      onCellClick: item.click,
      range: item.range,
      shared: !perRunScale.checked,
      kind: item.kind,
    });
  }

  /** Recolors the heatmaps of this generation whose range is not the one they should have. */
  function recolor({ force = false } = {}) {
    const shared = sharedRange();
    for (const item of drawn.values()) {
      if (item.generation !== generation || item.mode !== "value") continue;
      const range = rangeFor(item, shared);
      if (!force && sameRange(range, item.range)) continue;
      item.range = range;
      item.handle.setRange(range, !perRunScale.checked);
    }
  }

  async function loadRun(name) {
    const entry = sections.get(name);
    if (!entry) return;
    const ticket = generation;
    const { choice, mode, metric } = currentChoice();
    try {
      const data = await store.overview(name, metric);
      if (ticket !== generation) return;
      const click = (i, j) => onCellClick(name, data.layers[i], data.snapshots[j]);
      const kind = store.runs().runs.find((run) => run.name === name)?.kind ?? null;
      const item = { body: entry.body, data, mode, choice, click, kind, generation: ticket, range: null, handle: null };
      item.ownRange = mode === "value" ? valueRange(data) : null;
      drawn.set(name, item);
      const shared = sharedRange();
      item.range = mode === "value" ? rangeFor(item, shared) : null;
      drawItem(item);
      entry.body.style.minHeight = "";
      entry.section.classList.remove("stale");
      entry.skippedSlot.replaceChildren(...[skippedList(data.skipped)].filter(Boolean));
      recolor();
    } catch (error) {
      if (ticket !== generation) return;
      drawn.delete(name);
      entry.body.style.minHeight = "";
      entry.section.classList.remove("stale");
      entry.body.replaceChildren(h("p", { class: "run-error", text: error.message }));
      entry.skippedSlot.replaceChildren();
    }
  }

  /** Lays out a section per run; their heatmaps load as they come near the viewport. */
  function drawAll() {
    generation += 1;
    perRunScale.disabled = currentChoice().mode === "phase";
    const { runs } = store.runs();
    const names = new Set(runs.map((run) => run.name));
    for (const name of [...sections.keys()]) {
      if (!names.has(name)) {
        lazy.forget(name);
        sections.delete(name);
        drawn.delete(name);
      }
    }
    if (runs.length === 0) {
      runsBox.replaceChildren(h("p", { class: "note", text: "No run with spectra was found in the log directory." }));
      return;
    }
    runsBox.replaceChildren(...runs.map((run) => sectionFor(run).section));
    for (const run of runs) {
      const entry = sectionFor(run);
      if (drawn.has(run.name)) entry.section.classList.add("stale");
      else entry.body.style.minHeight = `${heatmapHeight(run.layers)}px`;
      lazy.observe(run.name, entry.section);
    }
    lazy.invalidate();
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
    drawAll();
  }

  metricSelect.addEventListener("change", () => drawAll());
  perRunScale.addEventListener("change", () => recolor({ force: true }));
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const item of drawn.values()) drawItem(item);
    }, 150);
  });
  return { element, refresh };
}
