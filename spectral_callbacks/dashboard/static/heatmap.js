// One run's layer x snapshot heatmap on a <canvas>: rows are layers (model order), columns are
// snapshots. The canvas is exactly the cell grid; labels and legend are HTML around it.

import { h } from "./dom.js";
import { fmt, num } from "./format.js";
import { MISSING_MARK_RGB, MISSING_RGB, cssRgb, phaseColor, phaseRgb, sequentialGradient, sequentialRgb } from "./colors.js";
import { hideTooltip, showTooltip } from "./tooltip.js";

const LABEL_CHARS = 36;
const MIN_LABEL_GAP = 40;
// Checkpoint columns of post-hoc runs: widest cell, and label length aimed at, in characters of
// about COL_CHAR_WIDTH pixels (see .col-label).
const CHECKPOINT_COLUMN = 120;
const CHECKPOINT_CHARS = 18;
const COL_CHAR_WIDTH = 6.2;
// Metrics that come from the power-law fit: a "no-fit" cell has no meaningful value for them.
// Other metrics (norms, ranks, the MP fit) are computed whether or not a power law was fitted.
const FIT_METRICS = new Set(["alpha", "alpha_weighted", "log_alpha_norm", "xmin", "xmax", "D", "sigma", "num_pl_spikes"]);
// Height in CSS pixels of what is drawn under the cells (column labels and the axis title), and
// the least height of the value legend beside them: see .col-labels, .col-title, .legend.
const UNDER_CELLS = 33.4;
const LEGEND_HEIGHT = 73;

/** Cell height in CSS pixels for a number of layers: readable rows for small models, compact for big. */
function rowHeight(layers) {
  if (layers <= 12) return 22;
  if (layers <= 30) return 16;
  if (layers <= 60) return 12;
  return 8;
}

/**
 * Height in CSS pixels of the heatmap of a run with `layers` layers, for a placeholder that
 * keeps the page's layout while the run's data is not loaded.
 */
export function heatmapHeight(layers) {
  if (!(layers > 0)) return 40;
  return Math.max(layers * rowHeight(layers) + UNDER_CELLS, LEGEND_HEIGHT);
}

/** Cell width in CSS pixels so the snapshots fill `available` pixels, within [2, `widest`]. */
function columnWidth(snapshots, available, widest = 64) {
  return Math.max(2, Math.min(widest, Math.floor(available / Math.max(1, snapshots))));
}

/**
 * Shortens a long dotted name to at most `maxChars` by one rule for every name: it keeps the
 * end (the parts that tell layers apart) and puts "…" for what is cut, at a dot when one is near.
 * The full name goes in the label's title.
 */
export function shortName(name, maxChars = LABEL_CHARS) {
  if (name.length <= maxChars) return name;
  const start = name.length - (maxChars - 1);
  const tail = name.slice(start);
  const dot = tail.indexOf(".");
  const atPart = name[start - 1] === ".";
  const kept = !atPart && dot >= 0 && dot < tail.length - 1 && dot <= maxChars / 3 ? tail.slice(dot + 1) : tail;
  return `…${kept}`;
}

/** `text` cut to `maxChars` characters, "…" marking the cut. */
function truncate(text, maxChars) {
  return text.length <= maxChars ? text : `${text.slice(0, Math.max(1, maxChars - 1))}…`;
}

/**
 * The text under a column: a post-hoc run's checkpoint label (cut to `maxChars`), else the
 * epoch, or the snapshot's position when there is no epoch.
 */
function columnText(snapshot, index, checkpoints, maxChars) {
  if (checkpoints) return truncate(snapshot.label || String(index), maxChars);
  return num(snapshot.epoch) === null ? String(index) : String(snapshot.epoch);
}

/** Whether a cell of `metric` with this status has no value to color (it is drawn gray). */
function grayStatus(status, metric) {
  return status === "skipped" || (status === "no-fit" && FIT_METRICS.has(metric));
}

/**
 * Where a value lies on the colour scale of `range`, in [0, 1]: linear, or on a log scale when
 * `log` (values <= 0 then take the bottom colour).
 */
function scalePosition(value, [lo, hi], log) {
  if (log) return value > 0 ? (Math.log10(value) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : 0;
  return hi > lo ? (value - lo) / (hi - lo) : 0.5;
}

/**
 * Whether the colours of `metric` over `range` follow a log scale: when every value of the
 * range is positive and it spans more than three decades (lambda_min, sv_min, norms), where a
 * linear scale would paint all but the largest values in the bottom colour. The capped metrics
 * (alpha) stay linear.
 */
export function useLogScale(range, metric) {
  if (!range || COLOUR_CAPS[metric] !== undefined) return false;
  const [lo, hi] = range;
  return lo > 0 && hi / lo > 1e3;
}

/** What a cell shows: {missing, rgb} for the value or phase mode. */
function cellLook(data, mode, i, j, lo, hi, log = false) {
  const status = data.status_names?.[data.status?.[i]?.[j]] ?? null;
  const phaseIndex = data.phases?.[i]?.[j];
  const phase = phaseIndex === null || phaseIndex === undefined ? null : data.phase_names?.[phaseIndex] ?? null;
  if (mode === "phase") {
    if (status === "skipped" || phase === null) return { missing: true };
    return { missing: false, rgb: phaseRgb(phase, phaseIndex) };
  }
  const value = num(data.values?.[i]?.[j]);
  if (value === null || grayStatus(status, data.metric)) return { missing: true };
  return { missing: false, rgb: sequentialRgb(scalePosition(value, [lo, hi], log)) };
}

// Colour scales stop here: alpha above 8 is far from the heavy tails of trained layers (2 to 6,
// Martin & Mahoney 2021), and a few such values (initialization, a classifier) would otherwise
// squeeze every trained layer into one end of the scale. Larger values take the top colour.
const COLOUR_CAPS = { alpha: 8 };

/** [lo, hi] of an `overview` answer's finite values (its `range` when given), the top capped
 * for the metrics of COLOUR_CAPS; null if none. */
export function valueRange(data) {
  const range = ownRange(data);
  const cap = COLOUR_CAPS[data.metric];
  if (range && cap !== undefined && range[0] < cap && range[1] > cap) return [range[0], cap];
  return range;
}

function ownRange(data) {
  const range = data.range;
  if (Array.isArray(range) && num(range[0]) !== null && num(range[1]) !== null) return [range[0], range[1]];
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of data.values || []) {
    for (const v of row) {
      if (num(v) !== null) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
  }
  return lo <= hi ? [lo, hi] : null;
}

function paint(canvas, data, mode, range, cellW, cellH) {
  const layers = data.layers.length;
  const snapshots = data.snapshots.length;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(snapshots * cellW * ratio);
  canvas.height = Math.round(layers * cellH * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const [lo, hi] = range || [0, 1];
  const log = mode === "value" && useLogScale(range, data.metric);
  const missing = [];
  for (let i = 0; i < layers; i += 1) {
    for (let j = 0; j < snapshots; j += 1) {
      const look = cellLook(data, mode, i, j, lo, hi, log);
      if (look.missing) {
        missing.push([i, j]);
        ctx.fillStyle = cssRgb(MISSING_RGB);
      } else {
        ctx.fillStyle = cssRgb(look.rgb);
      }
      ctx.fillRect(j * cellW, i * cellH, cellW, cellH);
    }
  }
  // Missing cells: a diagonal stroke across each, so they read as "no value", not as a color.
  ctx.strokeStyle = cssRgb(MISSING_MARK_RGB);
  ctx.lineWidth = Math.max(1, Math.min(cellW, cellH) / 6);
  ctx.beginPath();
  for (const [i, j] of missing) {
    ctx.moveTo(j * cellW + 0.5, (i + 1) * cellH - 0.5);
    ctx.lineTo((j + 1) * cellW - 0.5, i * cellH + 0.5);
  }
  ctx.stroke();
  // Thin separators between cells when they are large enough to keep them readable.
  if (cellW >= 8 && cellH >= 8) {
    ctx.strokeStyle = "rgba(255, 255, 255, 0.6)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let j = 1; j < snapshots; j += 1) {
      ctx.moveTo(j * cellW, 0);
      ctx.lineTo(j * cellW, layers * cellH);
    }
    for (let i = 1; i < layers; i += 1) {
      ctx.moveTo(0, i * cellH);
      ctx.lineTo(snapshots * cellW, i * cellH);
    }
    ctx.stroke();
  }
}

/** The legend's top label: "≥ hi" when some of the run's values lie above the colour range. */
function highEnd(data, range) {
  const own = ownRange(data);
  return own && own[1] > range[1] ? `≥ ${fmt(range[1])}` : fmt(range[1]);
}

/** The text under the value legend's scale: whose values the colors span, and how. */
function scaleText(shared, log) {
  const whose = shared ? "scale: all loaded runs" : "scale: this run";
  return log ? `${whose}, log scale` : whose;
}

function legend(data, mode, range, metric, shared) {
  const box = h("div", { class: "legend" });
  if (mode === "phase") {
    box.append(h("div", { class: "legend-title", text: "phase" }));
    const used = new Set();
    (data.phases || []).forEach((row, i) => row.forEach((p, j) => {
      if (!cellLook(data, "phase", i, j, 0, 1).missing) used.add(p);
    }));
    (data.phase_names || []).forEach((name, index) => {
      if (!used.has(index)) return;
      box.append(
        h("div", { class: "legend-item" }, h("span", { class: "swatch", style: { background: phaseColor(name, index) } }), name),
      );
    });
  } else {
    box.append(h("div", { class: "legend-title", text: metric }));
    box.append(
      h(
        "div",
        { class: "legend-scale" },
        h("span", { class: "legend-lo", text: range ? fmt(range[0]) : "—" }),
        h("span", { class: "legend-bar", style: { background: sequentialGradient() } }),
        h("span", { class: "legend-hi", text: range ? highEnd(data, range) : "—" }),
      ),
    );
    box.append(h("div", { class: "legend-range-note note", text: scaleText(shared, useLogScale(range, data.metric)) }));
  }
  const gray = mode === "phase" ? "no phase / skipped" : FIT_METRICS.has(data.metric) ? "no value / skipped / no fit" : "no value / skipped";
  box.append(h("div", { class: "legend-item" }, h("span", { class: "swatch missing" }), gray));
  return box;
}

/**
 * Draws the heatmap of an `overview` answer into `container` (replacing its content).
 * `mode` is "value" (continuous colors of `metric`) or "phase" (categorical phase colors);
 * `onCellClick(layerIndex, snapshotIndex)` is called on a click on a cell. In value mode the
 * colors span `range` (e.g. shared by several runs, `shared` true) or else the run's own values.
 * Columns are epochs, or checkpoints when `kind` is "posthoc" (labelled with their file names).
 * Returns {setRange(range, shared)}, which recolors the cells for another range.
 */
export function drawHeatmap(container, data, { mode, metric, onCellClick, range: givenRange = null, shared = false, kind = null }) {
  const layers = data.layers.length;
  const snapshots = data.snapshots.length;
  container.replaceChildren();
  if (layers === 0 || snapshots === 0) {
    container.append(h("p", { class: "note", text: "This run has no analyzed layer or snapshot yet." }));
    return { setRange() {} };
  }
  const range = mode === "phase" ? null : givenRange ?? valueRange(data);
  const labelWidth = 230;
  const legendWidth = 190;
  const available = Math.max(200, (container.clientWidth || document.documentElement.clientWidth - 60) - labelWidth - legendWidth - 40);
  const checkpoints = kind === "posthoc";
  // checkpoint columns are wider, so that a file name like "model.safetensors" fits under one
  const cellW = columnWidth(snapshots, available, checkpoints ? CHECKPOINT_COLUMN : 64);
  const cellH = rowHeight(layers);
  const labelStride = Math.ceil(12 / cellH);

  const rowLabels = h("div", { class: "row-labels", style: { width: `${labelWidth}px` } });
  data.layers.forEach((name, i) => {
    const label = h("div", { class: "row-label", title: name, text: shortName(name), style: { height: `${cellH}px`, lineHeight: `${cellH}px` } });
    if (i % labelStride !== 0) label.classList.add("thin");
    if (cellH < 12) label.classList.add("compact");
    rowLabels.append(label);
  });

  const canvas = h("canvas", {
    class: "heatmap-canvas",
    "data-layers": layers,
    "data-snapshots": snapshots,
    style: { width: `${snapshots * cellW}px`, height: `${layers * cellH}px` },
  });
  paint(canvas, data, mode, range, cellW, cellH);

  const columnLabels = h("div", { class: "col-labels", style: { width: `${snapshots * cellW}px` } });
  const stride = Math.max(1, Math.ceil((checkpoints ? CHECKPOINT_CHARS * COL_CHAR_WIDTH : MIN_LABEL_GAP) / cellW));
  const labelChars = Math.max(4, Math.floor((stride * cellW - 6) / COL_CHAR_WIDTH));
  for (let j = 0; j < snapshots; j += stride) {
    const text = columnText(data.snapshots[j], j, checkpoints, labelChars);
    columnLabels.append(
      h("span", { class: "col-label", title: data.snapshots[j].label ?? "", text, style: { left: `${(j + 0.5) * cellW}px` } }),
    );
  }
  const grid = h(
    "div",
    { class: "heatmap-grid" },
    rowLabels,
    h("div", { class: "canvas-wrap" }, canvas, columnLabels, h("div", { class: "col-title", text: checkpoints ? "checkpoint" : "epoch" })),
    legend(data, mode, range, metric, shared),
  );
  container.append(grid);

  const cellAt = (event) => {
    const rect = canvas.getBoundingClientRect();
    const j = Math.floor(((event.clientX - rect.left) / rect.width) * snapshots);
    const i = Math.floor(((event.clientY - rect.top) / rect.height) * layers);
    return i >= 0 && i < layers && j >= 0 && j < snapshots ? [i, j] : null;
  };
  canvas.addEventListener("mousemove", (event) => {
    const cell = cellAt(event);
    if (!cell) return hideTooltip();
    const [i, j] = cell;
    const snapshot = data.snapshots[j];
    const phaseIndex = data.phases?.[i]?.[j];
    showTooltip(event.clientX, event.clientY, [
      data.layers[i],
      ["epoch", `${fmt(snapshot.epoch)} (step ${fmt(snapshot.step)})`],
      ["snapshot", snapshot.label ?? "—"],
      [data.metric || metric, fmt(num(data.values?.[i]?.[j]))],
      ["phase", data.phase_names?.[phaseIndex] ?? "—"],
      ["status", data.status_names?.[data.status?.[i]?.[j]] ?? "—"],
    ]);
  });
  canvas.addEventListener("mouseleave", hideTooltip);
  canvas.addEventListener("click", (event) => {
    const cell = cellAt(event);
    if (cell && onCellClick) {
      hideTooltip();
      onCellClick(cell[0], cell[1]);
    }
  });

  function setRange(newRange, newShared) {
    if (mode === "phase" || !newRange) return;
    paint(canvas, data, mode, newRange, cellW, cellH);
    grid.querySelector(".legend-lo").textContent = fmt(newRange[0]);
    grid.querySelector(".legend-hi").textContent = highEnd(data, newRange);
    grid.querySelector(".legend-range-note").textContent = scaleText(newShared, useLogScale(newRange, data.metric));
  }
  return { setRange };
}
