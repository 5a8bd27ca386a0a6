// The compare scatter plot: one point per run, a run parameter on x and a metric on y.

import { drawAxes, linearExtent, linearScale, logScale, plotArea, positiveExtent } from "./axes.js";
import { s } from "./dom.js";
import { fmt, num } from "./format.js";

const WIDTH = 760;
const HEIGHT = 440;
const MARGIN = { left: 84, right: 28, top: 20, bottom: 56 };

const MAX_LABELED = 12;

/** Run names next to the points (points drawn at the same place share one label). */
function pointLabels(points, x, y) {
  const byPlace = new Map();
  for (const p of points) {
    const key = `${Math.round(x(p.x))},${Math.round(y(p.y))}`;
    if (!byPlace.has(key)) byPlace.set(key, { px: x(p.x), py: y(p.y), runs: [] });
    byPlace.get(key).runs.push(p.run);
  }
  const group = s("g", { class: "point-labels" });
  for (const { px, py, runs } of byPlace.values()) {
    const nearRight = px > WIDTH - MARGIN.right - 160;
    group.append(
      s("text", {
        class: "point-label",
        x: px + (nearRight ? -9 : 9),
        y: py + 4,
        "text-anchor": nearRight ? "end" : "start",
        text: runs.join(", "),
      }),
    );
  }
  return group;
}

/** True when x should be log-scaled: all values positive and spanning more than a decade. */
export function wantsLogX(values) {
  if (values.length === 0 || !values.every((v) => v > 0)) return false;
  return Math.max(...values) / Math.min(...values) > 10;
}

/** Draws the `compare` answer into `svg`; returns the number of points drawn. */
export function drawCompare(svg, answer) {
  const { left, right, top, bottom } = plotArea(svg, WIDTH, HEIGHT, MARGIN);
  const points = (answer.points || [])
    .map((p) => ({ ...p, x: num(p.x), y: num(p.y) }))
    .filter((p) => p.x !== null && p.y !== null);
  if (points.length === 0) {
    svg.append(s("text", { class: "empty-note", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", text: "no run has both this parameter and this metric" }));
    return 0;
  }
  const xs = points.map((p) => p.x);
  const x = wantsLogX(xs) ? logScale(positiveExtent(xs, 1.3), [left, right]) : linearScale(linearExtent(xs), [left, right]);
  const y = linearScale(linearExtent(points.map((p) => p.y), 0.08), [bottom, top]);
  const where = answer.layer ? `layer ${answer.layer}` : "model average";
  drawAxes(svg, x, y, { xLabel: answer.param, yLabel: `${answer.metric} (${where})` });
  const group = s("g", { class: "points" });
  for (const p of points) {
    const circle = s("circle", { class: "point", "data-run": p.run, cx: x(p.x), cy: y(p.y), r: 5.5 });
    circle.append(s("title", { text: `${p.run}\n${answer.param} = ${fmt(p.x)}\n${answer.metric} = ${fmt(p.y)} (epoch ${fmt(p.epoch)})` }));
    group.append(circle);
  }
  svg.append(group);
  if (points.length <= MAX_LABELED) svg.append(pointLabels(points, x, y));
  return points.length;
}
