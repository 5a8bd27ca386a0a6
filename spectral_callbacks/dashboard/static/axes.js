// Linear and log scales with their ticks, and SVG axes drawn from them.

import { clear, s } from "./dom.js";
import { fmt } from "./format.js";

/** Empties `svg`, sets its viewBox to `width` x `height`, and returns the plot area inside `margin`. */
export function plotArea(svg, width, height, margin) {
  clear(svg);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return { left: margin.left, right: width - margin.right, top: margin.top, bottom: height - margin.bottom };
}

/** A linear map from [d0, d1] to [r0, r1], with ticks at 1-2-5 steps. */
export function linearScale([d0, d1], [r0, r1]) {
  const lo = d0 === d1 ? d0 - 1 : d0;
  const hi = d0 === d1 ? d1 + 1 : d1;
  const scale = (v) => r0 + ((v - lo) / (hi - lo)) * (r1 - r0);
  scale.type = "linear";
  scale.domain = [lo, hi];
  scale.range = [r0, r1];
  scale.ticks = (count = 6) => linearTicks(lo, hi, count).map((value) => ({ value, label: fmt(value) }));
  scale.minorTicks = () => [];
  return scale;
}

/** A base-10 log map from [d0, d1] (both > 0) to [r0, r1]; ticks at powers of ten. */
export function logScale([d0, d1], [r0, r1]) {
  let lo = Math.log10(d0);
  let hi = Math.log10(d1);
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  const scale = (v) => r0 + ((Math.log10(v) - lo) / (hi - lo)) * (r1 - r0);
  scale.type = "log";
  scale.domain = [10 ** lo, 10 ** hi];
  scale.range = [r0, r1];
  scale.ticks = () => logTicks(10 ** lo, 10 ** hi);
  scale.minorTicks = () => logMinorTicks(10 ** lo, 10 ** hi);
  return scale;
}

/** Evenly spaced round values (steps of 1, 2 or 5 times a power of ten) inside [lo, hi]. */
export function linearTicks(lo, hi, count = 6) {
  const raw = (hi - lo) / Math.max(1, count);
  if (!(raw > 0) || !Number.isFinite(raw)) return [lo];
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return ticks;
}

/** Powers of ten inside [lo, hi]; 2x and 5x values too when fewer than two powers fit. */
export function logTicks(lo, hi) {
  const first = Math.ceil(Math.log10(lo) - 1e-9);
  const last = Math.floor(Math.log10(hi) + 1e-9);
  const decades = last - first + 1;
  if (decades >= 2) {
    const stride = Math.ceil(decades / 8);
    const ticks = [];
    for (let k = first; k <= last; k += 1) {
      if ((k - first) % stride === 0) ticks.push({ value: 10 ** k, exponent: k });
    }
    return ticks;
  }
  const ticks = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k += 1) {
    for (const m of [1, 2, 5]) {
      const value = m * 10 ** k;
      if (value >= lo * (1 - 1e-9) && value <= hi * (1 + 1e-9)) {
        ticks.push(m === 1 ? { value, exponent: k } : { value, label: fmt(value) });
      }
    }
  }
  if (ticks.length >= 2) return ticks;
  return linearTicks(lo, hi, 4).filter((v) => v > 0).map((value) => ({ value, label: fmt(value) }));
}

/** Unlabeled 2..9 multiples of powers of ten inside [lo, hi], when the span is a few decades. */
export function logMinorTicks(lo, hi) {
  if (Math.log10(hi / lo) > 6) return [];
  const ticks = [];
  for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k += 1) {
    for (let m = 2; m <= 9; m += 1) {
      const value = m * 10 ** k;
      if (value > lo && value < hi) ticks.push(value);
    }
  }
  return ticks;
}

/** SVG text of a tick: "10" with a raised exponent for powers of ten, else the formatted value. */
function tickText(tick, attrs) {
  if (tick.exponent === undefined) return s("text", { ...attrs, text: tick.label });
  if (tick.exponent === 0) return s("text", { ...attrs, text: "1" });
  if (tick.exponent === 1) return s("text", { ...attrs, text: "10" });
  return s(
    "text",
    attrs,
    "10",
    s("tspan", { dy: "-0.45em", "font-size": "0.75em", text: String(tick.exponent) }),
  );
}

/**
 * Draws both axes of a plot area into `group`: grid lines, ticks, tick labels and axis titles.
 * `x` and `y` are scales whose ranges are the plot area's pixel extents.
 */
export function drawAxes(group, x, y, { xLabel = "", yLabel = "" } = {}) {
  const [left, right] = x.range;
  const [bottom, top] = y.range;
  const axes = s("g", { class: "axes" });
  for (const value of x.minorTicks()) {
    axes.append(s("line", { class: "grid minor", x1: x(value), x2: x(value), y1: top, y2: bottom }));
  }
  for (const value of y.minorTicks()) {
    axes.append(s("line", { class: "grid minor", x1: left, x2: right, y1: y(value), y2: y(value) }));
  }
  for (const tick of x.ticks(7)) {
    const px = x(tick.value);
    axes.append(s("line", { class: "grid", x1: px, x2: px, y1: top, y2: bottom }));
    axes.append(s("line", { class: "tick", x1: px, x2: px, y1: bottom, y2: bottom + 5 }));
    axes.append(tickText(tick, { class: "tick-label", x: px, y: bottom + 18, "text-anchor": "middle" }));
  }
  for (const tick of y.ticks(5)) {
    const py = y(tick.value);
    axes.append(s("line", { class: "grid", x1: left, x2: right, y1: py, y2: py }));
    axes.append(s("line", { class: "tick", x1: left - 5, x2: left, y1: py, y2: py }));
    axes.append(tickText(tick, { class: "tick-label", x: left - 8, y: py + 4, "text-anchor": "end" }));
  }
  axes.append(s("line", { class: "axis-line", x1: left, x2: right, y1: bottom, y2: bottom }));
  axes.append(s("line", { class: "axis-line", x1: left, x2: left, y1: top, y2: bottom }));
  axes.append(
    s("text", { class: "axis-title x-title", x: (left + right) / 2, y: bottom + 38, "text-anchor": "middle", text: xLabel }),
  );
  const midY = (top + bottom) / 2;
  axes.append(
    s("text", {
      class: "axis-title y-title",
      x: left - 52,
      y: midY,
      "text-anchor": "middle",
      transform: `rotate(-90 ${left - 52} ${midY})`,
      text: yLabel,
    }),
  );
  group.append(axes);
}

/** Log domain [lo, hi] of positive values, widened by a factor on each side; null if none. */
export function positiveExtent(values, pad = 1.15) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v > 0 && Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (!(lo <= hi)) return null;
  return [lo / pad, hi * pad];
}

/** Linear domain [lo, hi] of finite values with a margin of `pad` times the span; null if none. */
export function linearExtent(values, pad = 0.06) {
  const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (finite.length === 0) return null;
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  const margin = hi > lo ? (hi - lo) * pad : Math.abs(lo) * 0.1 || 1;
  return [lo - margin, hi + margin];
}
