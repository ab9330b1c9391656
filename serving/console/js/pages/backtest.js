// The latest backtest of the service's run (GET /v1/backtest): equity and drawdown curves per
// strategy and the metrics table. The curves come from the API, never from the Markdown report.

import { api } from "../api.js";
import { chart, COLORS, percentAxis } from "../charts.js";
import { h, replace, section, table } from "../dom.js";
import { num, pct } from "../format.js";

export const TITLE = "Backtest";
// Shown at first (the others one click away in the legend): the served profiles and two baselines.
const FIRST = /^(served_|equal_weight$|index_buy_hold$)/;

export async function render(main, ctx) {
  const data = await api("v1/backtest");
  if (!ctx.alive()) return;
  const strategies = data.strategies || Object.keys(data.curves.equity);
  const some = strategies.some((s) => FIRST.test(s));
  const lines = (series, format) => ({
    type: "line",
    data: { labels: data.curves.dates, datasets: strategies.map((s, i) => ({ label: s, data: series[s],
      borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], borderWidth: 1.5,
      pointRadius: 0, hidden: some && !FIRST.test(s) })) },
    options: { interaction: { mode: "index", intersect: false }, scales: { x: { ticks: { maxTicksLimit: 8 } }, y: format || {} },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${format === undefined ? num(c.raw, 2) : pct(c.raw)}` } } } },
  });
  const columns = [["annual_return", "Annual return", pct], ["volatility", "Volatility", pct], ["sharpe", "Sharpe", num],
    ["sharpe_ci_low", "Sharpe 95% low", num], ["sharpe_ci_high", "Sharpe 95% high", num], ["sortino", "Sortino", num],
    ["max_drawdown", "Max drawdown", pct], ["turnover", "Turnover", pct]];
  const metrics = data.metrics || {};
  const equity = chart("Equity (growth of 1, net of costs)", lines(data.curves.equity, undefined), { tall: true });
  equity.id = "equity-chart";
  const drawdown = chart("Drawdown from the running peak", lines(data.curves.drawdown, percentAxis()));
  drawdown.id = "drawdown-chart";
  replace(main, h("h1", {}, TITLE),
    h("p", { class: "muted" }, `Run ${data.run}, as of ${data.as_of}${data.cost_bps !== undefined && data.cost_bps !== null
      ? `, costs ${data.cost_bps} bps per unit of turnover` : ""}. Click a legend entry to show or hide a strategy.`),
    section("Equity", equity),
    section("Drawdown", drawdown),
    section("Metrics", table(["Strategy", ...columns.map((c) => c[1])],
      Object.keys(metrics).map((s) => [s, ...columns.map(([k, , f]) => f(metrics[s][k]))]),
      { numeric: columns.map((_, i) => i + 1) })));
}
