// The chart of a provider's recent bursts: entities as bars, pages as a line, failures marked.

import { duration, h, number, svg, when } from "./dom.js";

const WIDTH = 760;
const HEIGHT = 220;
const PAD = { left: 52, right: 48, top: 16, bottom: 34 };
const FAILED = new Set(["failed", "lost"]);

function ceiling(value) {
  if (value <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

function label(burst) {
  const parts = [
    `Cycle ${burst.cycle_id}, burst ${burst.number}: ${burst.outcome}`,
    `${number(burst.pages)} pages, ${number(burst.entities)} entities`,
    `started ${when(burst.started_at)}, took ${duration(burst.duration_seconds)}`,
  ];
  if (burst.error) parts.push(burst.error);
  return parts.join("\n");
}

// ``bursts`` newest first, as the API lists them.
export function burstChart(bursts) {
  if (!bursts.length) return h("p", { class: "muted" }, "No burst has run yet.");
  const ordered = [...bursts].reverse();
  const times = ordered.map((b) => new Date(b.started_at).getTime());
  const start = times[0];
  const span = Math.max(times[times.length - 1] - start, 1);
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const barWidth = Math.max(3, Math.min(18, (plotWidth / ordered.length) * 0.6));
  const x = (i) => ordered.length === 1
    ? PAD.left + plotWidth / 2
    : PAD.left + barWidth / 2 + ((times[i] - start) / span) * (plotWidth - barWidth);
  const maxEntities = ceiling(Math.max(...ordered.map((b) => b.entities), 1));
  const maxPages = ceiling(Math.max(...ordered.map((b) => b.pages), 1));
  const yEntities = (v) => PAD.top + plotHeight * (1 - v / maxEntities);
  const yPages = (v) => PAD.top + plotHeight * (1 - v / maxPages);
  const failures = ordered.filter((b) => FAILED.has(b.outcome)).length;
  const summary = `${ordered.length} bursts from ${when(ordered[0].started_at)} to ` +
    `${when(ordered[ordered.length - 1].started_at)}; ${failures} failed. ` +
    `Most entities in one burst: ${number(Math.max(...ordered.map((b) => b.entities)))}.`;

  const grid = [0, 0.5, 1].map((f) => {
    const y = PAD.top + plotHeight * (1 - f);
    return svg("g", { class: "grid" },
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }),
      svg("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", class: "axis entities" },
        number(maxEntities * f)),
      svg("text", { x: WIDTH - PAD.right + 6, y: y + 4, class: "axis pages" },
        number(maxPages * f)));
  });
  const bars = ordered.map((b, i) => {
    const failed = FAILED.has(b.outcome);
    const top = yEntities(b.entities);
    return svg("g", { class: failed ? "burst failed" : "burst" },
      svg("title", {}, label(b)),
      svg("rect", {
        x: x(i) - barWidth / 2, y: top, width: barWidth,
        height: Math.max(PAD.top + plotHeight - top, failed ? 0 : 1), class: "bar",
      }),
      failed ? svg("path", {
        d: `M${x(i) - 5},${PAD.top + plotHeight + 4} l5,-9 l5,9 z`, class: "failure-mark",
      }) : null);
  });
  const line = svg("polyline", {
    class: "pages-line",
    points: ordered.map((b, i) => `${x(i).toFixed(1)},${yPages(b.pages).toFixed(1)}`).join(" "),
  });
  const dots = ordered.map((b, i) => svg("circle", { cx: x(i), cy: yPages(b.pages), r: 2.5, class: "pages-dot" }));
  const axis = svg("g", { class: "axis" },
    svg("text", { x: PAD.left, y: HEIGHT - 8 }, when(ordered[0].started_at)),
    svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 8, "text-anchor": "end" },
      when(ordered[ordered.length - 1].started_at)));

  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-labelledby": "chart-title chart-desc",
    class: "chart",
  },
  svg("title", { id: "chart-title" }, "Recent bursts"),
  svg("desc", { id: "chart-desc" }, summary),
  grid, bars, line, dots, axis);
  const legend = h("ul", { class: "legend" },
    h("li", { class: "entities" }, "entities per burst (left axis)"),
    h("li", { class: "pages" }, "pages per burst (right axis)"),
    h("li", { class: "failed" }, `failed burst (${failures})`));
  return h("figure", { class: "chart-figure" }, chart, legend,
    h("figcaption", { class: "muted" }, summary));
}
