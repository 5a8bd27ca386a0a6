// The ESD explorer: run, layer and snapshot controls, the log-log ESD with fit and MP edge,
// the fit table, overlays of other runs at the same epoch, and the conv-operator spectrum.

import { getJson, Latest } from "./api.js";
import { clearError, showError } from "./banner.js";
import { seriesColor } from "./colors.js";
import { clear, h, s, setOptions } from "./dom.js";
import { drawEsd, spikesOf } from "./esd_plot.js";
import { fillFitTable } from "./fit_table.js";
import { fmt, num } from "./format.js";
import { drawOperator } from "./operator_plot.js";
import * as store from "./store.js";

function isTextEntry(target) {
  if (!(target instanceof Element)) return false;
  return target.closest("input, select, textarea, [contenteditable]") !== null;
}

/**
 * Whether a layer of another run is the same layer as `mine`: same name, kind and shape. Only
 * then are their spectra comparable (an MLP's and a CNN's `network.2` are different layers).
 */
function sameLayer(layer, mine) {
  return layer.name === mine.name && layer.kind === mine.kind && layer.N === mine.N && layer.M === mine.M;
}

/**
 * How a snapshot is named: a post-hoc run's by its checkpoint file ("model.safetensors"), a
 * training run's by its label and step ("epoch 2 (step 32)"), the epoch added when the label
 * does not already say it.
 */
export function snapshotName(snapshot, kind) {
  if (!snapshot) return "";
  const label = snapshot.label ?? "";
  if (kind === "posthoc") return label || `checkpoint ${fmt(snapshot.step)}`;
  const epoch = `epoch ${fmt(snapshot.epoch)}`;
  if (label === "" || label === epoch) return `${epoch} (step ${fmt(snapshot.step)})`;
  if (label.includes(epoch)) return `${label} (step ${fmt(snapshot.step)})`;
  return `${label} (${epoch}, step ${fmt(snapshot.step)})`;
}

function snapshotLabel(snapshot, index, count, kind) {
  if (!snapshot) return "";
  return `${index + 1}/${count}: ${snapshotName(snapshot, kind)}`;
}

/** Builds the ESD view. `isActive()` says whether the view is shown (for the arrow keys). */
export function createEsdView({ isActive }) {
  const runSelect = h("select", { id: "esd-run" });
  const layerSelect = h("select", { id: "esd-layer" });
  const slider = h("input", { id: "snapshot", type: "range", min: 0, max: 0, step: 1, value: 0 });
  const sliderLabel = h("span", { id: "snapshot-label", class: "note" });
  const title = h("h2", { id: "esd-title" });
  const viewNote = h("p", { id: "esd-note", class: "note", hidden: true });
  const plot = s("svg", { id: "esd-plot", role: "img", "aria-label": "eigenvalue spectrum density, log-log" });
  const legend = h("div", { id: "esd-legend", class: "plot-legend" });
  const notes = h("div", { id: "overlay-notes" });
  const table = h("table", { id: "fit-table" });
  const overlayRuns = h("div", { id: "overlay-runs" });
  const operatorBox = h("div", { id: "operator-box" });
  const element = h(
    "div",
    { id: "view-esd", class: "view" },
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "esd-run", text: "run" }),
      runSelect,
      h("label", { for: "esd-layer", text: "layer" }),
      layerSelect,
      h("label", { for: "snapshot", text: "snapshot" }),
      slider,
      sliderLabel,
    ),
    viewNote,
    title,
    h(
      "div",
      { class: "esd-main" },
      h("div", { class: "esd-plot-col" }, plot, legend, notes),
      h(
        "div",
        { class: "esd-side" },
        table,
        h("h3", { text: "overlay runs with this layer" }),
        overlayRuns,
      ),
    ),
    operatorBox,
  );

  const state = { run: null, layer: null, index: 0, detail: null, checked: new Set() };
  const latest = new Latest();
  const runTicket = new Latest();

  function currentSnapshot() {
    return state.detail?.snapshots?.[state.index] ?? null;
  }

  function updateSliderLabel() {
    const count = state.detail?.snapshots?.length ?? 0;
    sliderLabel.textContent = count ? snapshotLabel(currentSnapshot(), state.index, count, state.detail?.kind) : "no snapshot";
  }

  /** A note above the plot about what the view did on its own (empty text hides it). */
  function setNote(text) {
    viewNote.textContent = text;
    viewNote.hidden = !text;
  }

  /**
   * Empties the plot, legend, fit table and operator spectrum after a failure, and titles the
   * view with what could not be shown, so nothing of an earlier selection stays on screen.
   */
  function showNoData(message) {
    plot.classList.remove("loading");
    clear(plot).append(s("text", { class: "empty-note", x: 380, y: 210, "text-anchor": "middle", text: "no plot: see the error above" }));
    for (const key of ["run", "layer", "step", "epoch"]) plot.removeAttribute(`data-${key}`);
    clear(legend);
    clear(notes);
    clear(table);
    drawOperatorBox({ operator: null });
    title.textContent = message;
  }

  async function updateOverlayChoices() {
    const layer = state.layer;
    const run = state.run;
    clear(overlayRuns).append(h("p", { class: "note", text: "looking for other runs…" }));
    const details = await store.allRunDetails();
    if (layer !== state.layer || run !== state.run) return;
    clear(overlayRuns);
    const mine = (state.detail?.layers || []).find((l) => l.name === layer);
    const others = mine ? details.filter((d) => d.name !== run && (d.layers || []).some((l) => sameLayer(l, mine))) : [];
    if (others.length === 0) {
      const shape = mine ? ` (${mine.kind}, ${fmt(num(mine.N))} x ${fmt(num(mine.M))})` : "";
      overlayRuns.append(h("p", { class: "note", text: `no other run has this layer${shape}` }));
      return;
    }
    for (const other of others) {
      const box = h("input", { type: "checkbox", value: other.name, checked: state.checked.has(other.name) });
      box.addEventListener("change", () => {
        if (box.checked) state.checked.add(other.name);
        else state.checked.delete(other.name);
        loadEsd();
      });
      overlayRuns.append(h("label", { class: "overlay-choice", title: other.name }, box, " ", other.name));
    }
  }

  /** Rebuilds the overlay checkboxes; reloads the plot when some of them are checked. */
  function refreshOverlays() {
    updateOverlayChoices().then(() => {
      if (overlayCandidates().length > 0) loadEsd();
    });
  }

  function overlayCandidates() {
    return [...overlayRuns.querySelectorAll("input[type=checkbox]")].filter((b) => b.checked).map((b) => b.value);
  }

  /** An overlay run's ESD at `epoch` as {data}, or {note} saying why it is not shown. */
  async function fetchOverlay(name, epoch, signal) {
    try {
      const detail = await store.runDetail(name);
      if (!(detail.snapshots || []).some((snap) => snap.epoch === epoch)) {
        return { note: `${name} has no snapshot at epoch ${fmt(epoch)}` };
      }
      return { data: await getJson("esd", { run: name, layer: state.layer, epoch }, { signal }) };
    } catch (error) {
      if (error.name === "AbortError") throw error;
      return { note: `${name}: ${error.message}` };
    }
  }

  function drawLegend(series, data) {
    clear(legend);
    for (const item of series) {
      legend.append(h("span", { class: "legend-item" }, h("span", { class: "swatch", style: { background: item.color } }), item.run));
    }
    if (data.fit && num(data.fit.alpha) !== null) {
      legend.append(h("span", { class: "legend-item" }, h("span", { class: "line-swatch fit-swatch" }), `power law, alpha = ${fmt(data.fit.alpha)}`));
      legend.append(h("span", { class: "legend-item" }, h("span", { class: "line-swatch xmin-swatch" }), "xmin"));
    }
    const lp = num(data.mp?.lambda_plus ?? data.metrics?.lambda_plus);
    if (lp !== null) legend.append(h("span", { class: "legend-item" }, h("span", { class: "line-swatch mp-swatch" }), "MP bulk edge λ+"));
    const threshold = num(data.mp?.spike_threshold);
    if (threshold !== null) {
      const spikes = spikesOf(series[0]?.evals || [], threshold).length;
      legend.append(h("span", { class: "legend-item" }, h("span", { class: "line-swatch threshold-swatch" }), "spike threshold"));
      legend.append(
        h("span", { class: "legend-item spike-count" }, h("span", { class: "dot-swatch" }), `${spikes} spikes (beyond λ+ and its Tracy-Widom margin)`),
      );
    }
  }

  function drawOperatorBox(data) {
    clear(operatorBox);
    if (!data.operator) {
      operatorBox.hidden = true;
      return;
    }
    operatorBox.hidden = false;
    const svg = s("svg", { id: "operator-plot", role: "img", "aria-label": "conv operator spectrum" });
    operatorBox.append(
      h("h3", { id: "operator-title", text: `conv operator spectrum (epoch ${fmt(data.operator.epoch ?? data.epoch)})` }),
      svg,
      h("p", { class: "note", text: "bars: density of the operator's Gram eigenvalues (kernel polynomial method); dots: its largest eigenvalues" }),
    );
    drawOperator(svg, data.operator);
  }

  async function loadEsd() {
    clearTimeout(pendingLoad);
    const snapshot = currentSnapshot();
    if (!state.run || !state.layer || !snapshot) return;
    const ticket = latest.take();
    const run = state.run;
    const layer = state.layer;
    const kind = state.detail?.kind;
    const signal = latest.signal;
    plot.classList.add("loading");
    let data;
    let overlays;
    const others = overlayCandidates();
    try {
      data = await getJson("esd", { run, layer, step: snapshot.step }, { signal });
      overlays = await Promise.all(others.map((name) => fetchOverlay(name, data.epoch, signal)));
    } catch (error) {
      if (!latest.isCurrent(ticket) || error.name === "AbortError") return;
      showError(error, "esd");
      showNoData(`${layer} - ${run} - ${snapshotName(snapshot, kind)}: no data`);
      return;
    }
    if (!latest.isCurrent(ticket)) return;
    clearError("esd");
    plot.classList.remove("loading");
    const series = [{ run, evals: (data.evals || []).map(num).filter((v) => v !== null), color: seriesColor(0), primary: true }];
    clear(notes);
    overlays.forEach((result, k) => {
      if (result.note) notes.append(h("p", { class: "note overlay-note", text: result.note }));
      else series.push({ run: others[k], evals: (result.data.evals || []).map(num).filter((v) => v !== null), color: seriesColor(k + 1) });
    });
    drawEsd(plot, {
      series,
      fit: data.fit,
      lambdaPlus: data.mp?.lambda_plus ?? data.metrics?.lambda_plus,
      spikeThreshold: data.mp?.spike_threshold,
    });
    for (const [key, value] of Object.entries({ run, layer, step: data.step, epoch: data.epoch })) {
      plot.setAttribute(`data-${key}`, String(value));
    }
    drawLegend(series, data);
    const shown = { epoch: data.epoch, step: data.step, label: data.label ?? snapshot.label };
    title.textContent = `${data.layer ?? layer} - ${data.run ?? run} - ${snapshotName(shown, kind)}`;
    fillFitTable(table, data);
    drawOperatorBox(data);
  }

  /** Picks a run; `prefer` may name a layer and a step (or an epoch) to show. */
  async function selectRun(name, prefer = {}) {
    const ticket = runTicket.take();
    let detail;
    try {
      detail = await store.runDetail(name);
    } catch (error) {
      if (!runTicket.isCurrent(ticket)) return;
      showError(error, "esd");
      // The selects show the chosen run: the view must not keep the previous run's data.
      clearTimeout(pendingLoad);
      latest.take();
      state.run = name;
      state.detail = null;
      runSelect.value = name;
      runSelect.title = name;
      setOptions(layerSelect, []);
      layerSelect.title = "";
      slider.max = "0";
      slider.value = "0";
      slider.disabled = true;
      state.index = 0;
      updateSliderLabel();
      clear(overlayRuns);
      showNoData(`${name}: cannot be shown`);
      return;
    }
    if (!runTicket.isCurrent(ticket)) return;
    const previousEpoch = currentSnapshot()?.epoch;
    state.run = name;
    state.detail = detail;
    runSelect.value = name;
    runSelect.title = name;
    const layers = (detail.layers || []).map((l) => l.name);
    const layer = [prefer.layer, state.layer].find((l) => l !== undefined && layers.includes(l)) ?? layers[0] ?? null;
    setOptions(layerSelect, layers, layer);
    layerSelect.title = layer ?? "";
    state.layer = layer;
    const snapshots = detail.snapshots || [];
    let index = snapshots.length - 1;
    const byStep = snapshots.findIndex((snap) => prefer.step !== undefined && snap.step === prefer.step);
    const byEpoch = snapshots.findLastIndex((snap) => previousEpoch !== undefined && snap.epoch === previousEpoch);
    if (byStep >= 0) index = byStep;
    else if (prefer.keepEpoch && byEpoch >= 0) index = byEpoch;
    state.index = Math.max(0, index);
    slider.max = String(Math.max(0, snapshots.length - 1));
    slider.value = String(state.index);
    slider.disabled = snapshots.length < 2;
    updateSliderLabel();
    if (!layer || snapshots.length === 0) {
      clearTimeout(pendingLoad);
      latest.take();
      showNoData(`${name}: no analyzed layer or snapshot yet`);
      clear(plot);
      return;
    }
    refreshOverlays();
    loadEsd();
  }

  // Snapshot moves (slider drags, held arrow keys) come in bursts: load once the burst pauses.
  let pendingLoad = null;
  function scheduleLoad() {
    clearTimeout(pendingLoad);
    pendingLoad = setTimeout(loadEsd, 60);
  }

  function moveSnapshot(delta) {
    const count = state.detail?.snapshots?.length ?? 0;
    const index = Math.min(count - 1, Math.max(0, state.index + delta));
    if (count === 0 || index === state.index) return;
    state.index = index;
    slider.value = String(index);
    updateSliderLabel();
    scheduleLoad();
  }

  // After a choice, focus leaves the select so that the arrow keys move the snapshot again
  // instead of changing the run or layer (see also the keydown handler below).
  runSelect.addEventListener("change", () => {
    runSelect.blur();
    setNote("");
    selectRun(runSelect.value, { keepEpoch: true });
  });
  layerSelect.addEventListener("change", () => {
    layerSelect.blur();
    state.layer = layerSelect.value;
    layerSelect.title = state.layer;
    refreshOverlays();
    loadEsd();
  });
  slider.addEventListener("input", () => {
    state.index = Number(slider.value);
    updateSliderLabel();
    scheduleLoad();
  });
  document.addEventListener("keydown", (event) => {
    if (!isActive() || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    // Left/right on the run and layer selects move the snapshot too (their up/down keys still
    // change the run or layer); other inputs keep their own use of the keys.
    const onSelect = event.target === runSelect || event.target === layerSelect;
    if (!onSelect && isTextEntry(event.target)) return;
    event.preventDefault();
    moveSnapshot(event.key === "ArrowRight" ? 1 : -1);
  });

  /**
   * Redraws after the run list changed; keeps the selection when it still exists, and says so
   * when the shown run is gone and another one takes its place.
   */
  function refresh() {
    const names = store.runNames();
    setOptions(runSelect, names, state.run);
    clear(overlayRuns);
    const vanished = state.run !== null && !names.includes(state.run) ? state.run : null;
    if (names.length === 0) {
      setNote(vanished === null ? "" : `Run ${vanished} is no longer in the log directory.`);
      clearTimeout(pendingLoad);
      latest.take();
      showNoData("No run to show.");
      clear(plot);
      return Promise.resolve();
    }
    const step = currentSnapshot()?.step;
    const run = vanished === null && state.run !== null ? state.run : names[0];
    setNote(vanished === null ? "" : `Run ${vanished} is no longer in the log directory: showing ${run} instead.`);
    return selectRun(run, { layer: state.layer, step });
  }

  /** Shows a given run, layer and snapshot (from a heatmap click). */
  function open({ run, layer, step }) {
    setNote("");
    setOptions(runSelect, store.runNames(), run);
    return selectRun(run, { layer, step });
  }

  return { element, refresh, open };
}
