// Chart.js (vendored UMD, window.Chart) with the console's defaults; one chart per canvas, destroyed
// before a page draws its canvas again (Chart.js keeps a registry of live charts).

import { h } from "./dom.js";

const live = new Set();
export const COLORS = ["#1f5fa8", "#d9822b", "#2e8b57", "#a23b72", "#6b6b6b", "#c0392b", "#7f8c8d", "#8e44ad",
  "#16a085", "#b8860b", "#2c3e50", "#e67e22"];

/** A canvas in a figure with a caption, and the chart drawn on it (``config`` as Chart.js takes it). */
export function chart(caption, config, { tall = false } = {}) {
  const canvas = h("canvas", { role: "img", "aria-label": caption });
  const figure = h("figure", { class: tall ? "chart tall" : "chart" }, h("div", { class: "chart-box" }, canvas),
    h("figcaption", {}, caption));
  const Chart = window.Chart;
  const options = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false, // screenshots and tests see the final chart at once
    ...config.options,
    plugins: { legend: { position: "bottom" }, ...(config.options || {}).plugins },
  };
  const instance = new Chart(canvas, { ...config, options });
  live.add(instance);
  figure.chart = instance;
  return figure;
}

/** Destroy every chart (before a page is drawn again). */
export function destroyCharts() {
  for (const c of live) c.destroy();
  live.clear();
}

export const percentAxis = (digits = 0) => ({ ticks: { callback: (v) => `${(v * 100).toFixed(digits)}%` } });
