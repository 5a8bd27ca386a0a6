// The log-log ESD plot: histogram densities over log-spaced bins (one path per run), the fitted
// power law, the Marchenko-Pastur bulk edge, the spike threshold beyond it, the spikes and xmin.

import { drawAxes, logScale, plotArea, positiveExtent } from "./axes.js";
import { s } from "./dom.js";
import { fmt, num } from "./format.js";

const WIDTH = 760;
const HEIGHT = 420;
const MARGIN = { left: 78, right: 24, top: 26, bottom: 52 };

/** Number of log-spaced bins for n eigenvalues: grows like the cube root, within [10, 80]. */
export function binCount(n) {
  return Math.max(10, Math.min(80, Math.round(3 * Math.cbrt(n) + 5)));
}

/**
 * Histogram of the positive values over log-spaced bins spanning [lo, hi]: returns
 * [{x0, x1, density}] with density = count / (total * width), total counting every eigenvalue.
 */
export function logHistogram(values, lo, hi, bins) {
  const logLo = Math.log10(lo);
  const logHi = Math.log10(hi);
  const counts = new Array(bins).fill(0);
  for (const v of values) {
    if (!(v > 0)) continue;
    const k = Math.floor(((Math.log10(v) - logLo) / (logHi - logLo)) * bins);
    if (k >= 0 && k <= bins) counts[Math.min(k, bins - 1)] += 1;
  }
  const total = values.length;
  return counts.map((count, k) => {
    const x0 = 10 ** (logLo + ((logHi - logLo) * k) / bins);
    const x1 = 10 ** (logLo + ((logHi - logLo) * (k + 1)) / bins);
    return { x0, x1, count, density: total > 0 ? count / (total * (x1 - x0)) : 0 };
  });
}

/** Density of the fitted power law at x (see the backend contract); null outside [xmin, xmax]. */
export function fitDensity(fit, total, x) {
  const alpha = num(fit.alpha);
  const xmin = num(fit.xmin);
  const tail = num(fit.num_tail);
  if (alpha === null || xmin === null || tail === null || total === 0) return null;
  return (tail / total) * ((alpha - 1) / xmin) * (x / xmin) ** -alpha;
}

/** SVG path data of a histogram as closed step areas; bins with zero count break the outline. */
function histogramPath(bins, x, y, bottom) {
  let d = "";
  let open = false;
  let lastX = 0;
  for (const bin of bins) {
    if (bin.density > 0) {
      const py = Math.min(bottom, y(bin.density));
      if (!open) {
        d += `M${x(bin.x0).toFixed(2)},${bottom.toFixed(2)}`;
        open = true;
      }
      d += `L${x(bin.x0).toFixed(2)},${py.toFixed(2)}L${x(bin.x1).toFixed(2)},${py.toFixed(2)}`;
      lastX = x(bin.x1);
    } else if (open) {
      d += `L${lastX.toFixed(2)},${bottom.toFixed(2)}Z`;
      open = false;
    }
  }
  if (open) d += `L${lastX.toFixed(2)},${bottom.toFixed(2)}Z`;
  return d;
}

const LABEL_CHAR_WIDTH = 6.5;

/** Width in SVG units of a marker label of `text` at the marker font size (an estimate). */
function labelWidth(text) {
  return 8 + text.length * LABEL_CHAR_WIDTH;
}

/**
 * Which side of its line each marker's label goes: the other side when the preferred one has no
 * room in the plot, or when its label would run across another marker's line and the other side
 * is free. Close markers (xmin next to λ+) thus get labels pointing away from each other.
 * markers: [{px, label, side}] -> the same markers with `right` (boolean) set.
 */
export function placeMarkerLabels(markers, left, right) {
  const outside = (marker, toRight) =>
    toRight ? marker.px + labelWidth(marker.label) > right : marker.px - labelWidth(marker.label) < left;
  const crosses = (marker, toRight) => {
    const width = labelWidth(marker.label);
    const [a, b] = toRight ? [marker.px, marker.px + width] : [marker.px - width, marker.px];
    return markers.some((other) => other !== marker && other.px > a - 2 && other.px < b + 2);
  };
  return markers.map((marker) => {
    const preferred = marker.side !== "left";
    const other = !preferred;
    let toRight = preferred;
    if (outside(marker, preferred)) toRight = other;
    else if (crosses(marker, preferred) && !crosses(marker, other) && !outside(marker, other)) toRight = other;
    return { ...marker, right: toRight };
  });
}

/** A vertical marker line with its label on row `row` (so two markers' labels never overlap). */
function verticalMarker(group, className, px, top, bottom, label, row, toRight) {
  group.append(s("line", { class: className, x1: px, x2: px, y1: top, y2: bottom }));
  group.append(
    s("text", {
      class: `marker-label ${className}-label`,
      x: px + (toRight ? 4 : -4),
      y: top + 12 + 14 * row,
      "text-anchor": toRight ? "start" : "end",
      text: label,
    }),
  );
}

/**
 * The primary run's spikes: its eigenvalues above `threshold` (the MP edge plus its Tracy-Widom
 * margin, whose count is the backend's `num_spikes`); none when there is no threshold.
 */
export function spikesOf(evals, threshold) {
  const t = num(threshold);
  return t === null ? [] : evals.filter((v) => v > t);
}

/**
 * Draws the ESD plot into `svg` (replacing its content).
 * series: [{run, evals, color, primary}]; the primary series brings `fit` ({alpha, xmin, xmax,
 * num_tail} or null), `lambdaPlus` and `spikeThreshold` (or null). Returns false when there is
 * nothing to plot.
 */
export function drawEsd(svg, { series, fit, lambdaPlus, spikeThreshold }) {
  const { left, right, top, bottom } = plotArea(svg, WIDTH, HEIGHT, MARGIN);
  const primary = series.find((item) => item.primary) || series[0];
  const allEvals = series.flatMap((item) => item.evals);
  const xmin = fit ? num(fit.xmin) : null;
  const lp = num(lambdaPlus);
  const threshold = num(spikeThreshold);
  const evalExtent = positiveExtent(allEvals, 1);
  if (!evalExtent) {
    svg.append(s("text", { class: "empty-note", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", text: "no positive eigenvalue to plot" }));
    return false;
  }
  let [lo, hi] = evalExtent;
  if (hi / lo < 1.5) {
    lo /= 1.25;
    hi *= 1.25;
  }
  const bins = binCount(Math.max(...series.map((item) => item.evals.length)));
  const histograms = series.map((item) => logHistogram(item.evals, lo, hi, bins));
  const total = primary ? primary.evals.length : 0;
  const xmax = fit ? num(fit.xmax) ?? hi : null;
  const fitPoints = [];
  if (fit && xmin !== null && xmax !== null && xmax > xmin) {
    for (let k = 0; k <= 24; k += 1) {
      const px = xmin * (xmax / xmin) ** (k / 24);
      const density = fitDensity(fit, total, px);
      if (density !== null && density > 0) fitPoints.push([px, density]);
    }
  }
  const densities = histograms.flat().map((bin) => bin.density).filter((d) => d > 0);
  const yExtent = positiveExtent(densities, 1) || [1e-3, 1];
  const yLo = yExtent[0] / 3;
  const yHi = yExtent[1] * 2;
  const xExtent = positiveExtent([lo, hi, xmin, lp, threshold].filter((v) => v !== null), 1.2);
  const x = logScale(xExtent, [left, right]);
  const y = logScale([yLo, yHi], [bottom, top]);

  const clipId = `${svg.id || "plot"}-clip`;
  svg.append(s("defs", {}, s("clipPath", { id: clipId }, s("rect", { x: left, y: top, width: right - left, height: bottom - top }))));
  drawAxes(svg, x, y, { xLabel: "eigenvalue", yLabel: "density" });
  const plot = s("g", { class: "plot-area", "clip-path": `url(#${clipId})` });
  svg.append(plot);

  series.forEach((item, index) => {
    const path = s("path", {
      class: item.primary ? "esd primary" : "esd overlay",
      "data-run": item.run,
      d: histogramPath(histograms[index], x, y, bottom),
      stroke: item.color,
      fill: item.primary ? item.color : "none",
    });
    path.append(s("title", { text: `${item.run}: ${item.evals.length} eigenvalues` }));
    plot.append(path);
  });

  if (fitPoints.length >= 2) {
    const d = fitPoints.map(([px, py], k) => `${k ? "L" : "M"}${x(px).toFixed(2)},${y(py).toFixed(2)}`).join("");
    const path = s("path", { class: "fit", d });
    path.append(s("title", { text: `power law: alpha = ${fmt(num(fit.alpha))}, from xmin = ${fmt(xmin)}` }));
    plot.append(path);
  }
  // The threshold lies just right of λ+: λ+'s label prefers the left of its line, the others the right.
  const markers = [];
  if (xmin !== null) markers.push({ className: "xmin", px: x(xmin), label: "xmin", row: 0, side: "right" });
  if (lp !== null) {
    const side = threshold !== null ? "left" : "right";
    markers.push({ className: "mp-edge", px: x(lp), label: "λ+ (MP edge)", row: 1, side });
  }
  if (threshold !== null) {
    markers.push({ className: "spike-threshold", px: x(threshold), label: "spike threshold", row: 2, side: "right" });
  }
  for (const marker of placeMarkerLabels(markers, left, right)) {
    verticalMarker(plot, marker.className, marker.px, top, bottom, marker.label, marker.row, marker.right);
  }
  if (threshold !== null) {
    for (const v of spikesOf(primary?.evals || [], threshold)) {
      const mark = s("circle", { class: "spike", cx: x(v), cy: bottom - 7, r: 3.5 });
      mark.append(s("title", { text: `spike: eigenvalue ${fmt(v)} above ${fmt(threshold)} (λ+ and its Tracy-Widom margin)` }));
      plot.append(mark);
    }
  }
  return true;
}
