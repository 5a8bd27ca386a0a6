// The compare view: a metric of every run against one of the runs' numeric parameters.

import { getJson, Latest } from "./api.js";
import { clearError, showError } from "./banner.js";
import { drawCompare } from "./compare_plot.js";
import { clear, h, s, setOptions } from "./dom.js";
import { fmt } from "./format.js";
import * as store from "./store.js";

/** The first parameter whose value differs between runs (the likely subject of a sweep). */
function varyingParam(answer) {
  for (const param of answer.params) {
    const values = new Set(answer.runs.map((run) => run.params?.[param]).filter((v) => v !== undefined && v !== null));
    if (values.size > 1) return param;
  }
  return answer.params[0];
}

export function createCompareView() {
  const metricSelect = h("select", { id: "compare-metric" });
  const paramSelect = h("select", { id: "compare-param" });
  const epochSelect = h("select", { id: "compare-epoch" });
  const layerSelect = h("select", { id: "compare-layer" });
  const empty = h("p", { id: "compare-empty", class: "note", hidden: true, text: "No run has a numeric parameter (hyperparameter) to compare against." });
  const plot = s("svg", { id: "compare-plot", role: "img", "aria-label": "metric against run parameter" });
  const sameX = h("p", { id: "compare-note", class: "note", hidden: true });
  const missing = h("ul", { id: "compare-missing" });
  const missingBox = h("div", { class: "missing-box", hidden: true }, h("h3", { text: "runs without a point" }), missing);
  const selects = [metricSelect, paramSelect, epochSelect, layerSelect];
  const element = h(
    "div",
    { id: "view-compare", class: "view" },
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "compare-metric", text: "metric" }),
      metricSelect,
      h("label", { for: "compare-param", text: "against" }),
      paramSelect,
      h("label", { for: "compare-epoch", text: "epoch" }),
      epochSelect,
      h("label", { for: "compare-layer", text: "layer" }),
      layerSelect,
    ),
    empty,
    h("div", { class: "compare-plot-box" }, plot),
    sameX,
    missingBox,
  );
  const latest = new Latest();

  async function draw() {
    const ticket = latest.take();
    const answer = store.runs();
    if (answer.params.length === 0) {
      empty.hidden = false;
      plot.style.display = "none";
      selects.forEach((select) => { select.disabled = true; });
      return;
    }
    empty.hidden = true;
    plot.style.display = "";
    selects.forEach((select) => { select.disabled = false; });
    const params = {
      metric: metricSelect.value,
      param: paramSelect.value,
      epoch: epochSelect.value === "" ? null : epochSelect.value,
      layer: layerSelect.value === "" ? null : layerSelect.value,
    };
    plot.classList.add("loading");
    let result;
    try {
      result = await getJson("compare", params);
    } catch (error) {
      if (!latest.isCurrent(ticket)) return;
      plot.classList.remove("loading");
      clear(plot).append(s("text", { class: "empty-note", x: 380, y: 220, "text-anchor": "middle", text: "no plot: see the error above" }));
      clear(missing);
      missingBox.hidden = true;
      showError(error, "compare");
      return;
    }
    if (!latest.isCurrent(ticket)) return;
    clearError("compare");
    plot.classList.remove("loading");
    drawCompare(plot, result);
    const xs = new Set((result.points || []).map((p) => p.x));
    sameX.hidden = !(xs.size === 1 && result.points.length > 1);
    sameX.textContent = `Every run shown has ${result.param} = ${fmt([...xs][0])}: choose a parameter that differs between runs.`;
    clear(missing);
    for (const item of result.missing || []) {
      missing.append(h("li", {}, h("code", { text: item.run }), " — ", item.reason ?? ""));
    }
    missingBox.hidden = (result.missing || []).length === 0;
  }

  /** Epoch and layer choices come from the runs' details, which may take a moment. */
  async function fillChoices() {
    const details = await store.allRunDetails();
    const epochs = new Set();
    for (const detail of details) for (const snap of detail.snapshots || []) if (typeof snap.epoch === "number") epochs.add(snap.epoch);
    const epochOptions = [{ value: "", label: "last" }, ...[...epochs].sort((a, b) => a - b).map((e) => ({ value: String(e), label: String(e) }))];
    setOptions(epochSelect, epochOptions, epochSelect.value);
    const first = details.find((d) => d.name === store.runNames()[0]);
    const layers = first ? (first.layers || []).map((l) => l.name) : [];
    setOptions(layerSelect, [{ value: "", label: "model average" }, ...layers.map((l) => ({ value: l, label: l }))], layerSelect.value);
  }

  /** Redraws after the run list changed, keeping the choices that still exist. */
  async function refresh() {
    const answer = store.runs();
    setOptions(metricSelect, answer.metrics, metricSelect.value || answer.default_metric);
    if (!metricSelect.value && answer.default_metric) metricSelect.value = answer.default_metric;
    setOptions(paramSelect, answer.params, paramSelect.value || varyingParam(answer));
    if (epochSelect.options.length === 0) setOptions(epochSelect, [{ value: "", label: "last" }]);
    if (layerSelect.options.length === 0) setOptions(layerSelect, [{ value: "", label: "model average" }]);
    const drawn = draw();
    try {
      await fillChoices();
    } catch (error) {
      showError(error);
    }
    await drawn;
  }

  for (const select of selects) select.addEventListener("change", draw);
  return { element, refresh };
}
