// The conv-operator spectrum plot: the KPM density histogram of the operator's Gram matrix and
// its largest eigenvalues as marks.

import { drawAxes, linearExtent, linearScale, logScale, plotArea, positiveExtent } from "./axes.js";
import { s } from "./dom.js";
import { fmt, num } from "./format.js";

const WIDTH = 760;
const HEIGHT = 300;
const MARGIN = { left: 78, right: 24, top: 16, bottom: 52 };

/** Draws `operator` ({edges, counts, top}) into `svg`; x is log-scaled when every edge is > 0. */
export function drawOperator(svg, operator) {
  const { left, right, top, bottom } = plotArea(svg, WIDTH, HEIGHT, MARGIN);
  const edges = (operator.edges || []).map(num);
  const counts = (operator.counts || []).map((c) => Math.max(0, num(c) ?? 0));
  const marks = (operator.top || []).map(num).filter((v) => v !== null);
  const usable = edges.length >= 2 && edges.every((e) => e !== null) && counts.length === edges.length - 1;
  if (!usable && marks.length === 0) {
    svg.append(s("text", { class: "empty-note", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", text: "no operator spectrum to plot" }));
    return;
  }
  const xValues = [...(usable ? edges : []), ...marks];
  const logX = xValues.every((v) => v > 0);
  const x = logX
    ? logScale(positiveExtent(xValues, 1.1), [left, right])
    : linearScale(linearExtent(xValues, 0.03), [left, right]);
  const yMax = Math.max(1e-12, ...counts);
  const y = linearScale([0, yMax * 1.08], [bottom, top]);
  drawAxes(svg, x, y, { xLabel: "eigenvalue of the operator's Gram matrix", yLabel: "count (KPM)" });
  if (usable) {
    let d = "";
    counts.forEach((count, k) => {
      if (count <= 0) return;
      const x0 = x(edges[k]);
      const x1 = x(edges[k + 1]);
      d += `M${x0.toFixed(2)},${bottom}L${x0.toFixed(2)},${y(count).toFixed(2)}L${x1.toFixed(2)},${y(count).toFixed(2)}L${x1.toFixed(2)},${bottom}Z`;
    });
    svg.append(s("path", { class: "operator-density", d }));
  }
  for (const v of marks) {
    const mark = s("circle", { class: "operator-top", cx: x(v), cy: bottom - 7, r: 3.5 });
    mark.append(s("title", { text: `top eigenvalue ${fmt(v)}` }));
    svg.append(mark);
  }
}
