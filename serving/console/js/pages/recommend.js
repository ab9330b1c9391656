// A portfolio and a risk profile -> POST /v1/recommendations: target against current weights as a bar
// chart, the checks that changed anything, expected returns with confidence, the status (ok or
// pending_approval); then POST /v1/explanations {request_id}: per-asset attributions and rationale.

import { api, busy } from "../api.js";
import { chart, COLORS, percentAxis } from "../charts.js";
import { field, h, replace, section, table } from "../dom.js";
import { pct, signedPct, when } from "../format.js";

export const TITLE = "Recommend";
const CASH = "CASH";

export async function render(main, ctx) {
  const forecasts = await api("v1/forecasts", { query: { horizon: 20 } });
  if (!ctx.alive()) return;
  const symbols = Object.keys(forecasts.ensemble).sort();
  const out = h("div", { id: "recommendation" });
  replace(main, h("h1", {}, TITLE),
    h("p", { class: "muted" }, `Market data as of ${forecasts.as_of}; ${symbols.length} symbols.`),
    form(symbols, forecasts.as_of, out), out);
}

function form(symbols, asOf, out) {
  const rows = h("div", { class: "rows", id: "portfolio-rows" });
  const options = (selected) => symbols.map((s) => h("option", { value: s, selected: s === selected }, s));
  function addRow(symbol, weight) {
    const n = rows.children.length + 1;
    const sym = h("select", { name: "symbol", "aria-label": `symbol ${n}` }, options(symbol));
    const w = h("input", { type: "number", name: "weight", min: 0, max: 1, step: 0.01, value: weight,
      "aria-label": `weight ${n} (0 to 1)`, required: true });
    const remove = h("button", { type: "button", class: "secondary small", "aria-label": `remove row ${n}` }, "Remove");
    const row = h("div", { class: "row" }, sym, w, remove);
    remove.addEventListener("click", () => row.remove());
    rows.append(row);
  }
  symbols.slice(0, 3).forEach((s) => addRow(s, 0.2));
  const add = h("button", { type: "button", class: "secondary small" }, "Add a holding");
  add.addEventListener("click", () => addRow(symbols[rows.children.length % symbols.length], 0.05));

  const tolerance = h("input", { type: "number", name: "risk_tolerance", min: 0, max: 1, step: 0.05, value: 0.5 });
  const maxPosition = h("input", { type: "number", name: "max_position", min: 0.01, max: 1, step: 0.01, value: 0.2 });
  const horizon = h("select", { name: "horizon_days" }, [5, 20, 60].map((d) => h("option", { value: d, selected: d === 20 }, `${d} trading days`)));
  const exclude = h("select", { name: "exclude", multiple: true, size: 4 }, symbols.map((s) => h("option", { value: s }, s)));
  const date = h("input", { type: "date", name: "as_of", max: asOf });
  const submit = h("button", { type: "submit" }, "Get a recommendation");
  const f = h("form", { class: "card", "aria-label": "Portfolio and risk profile" },
    h("fieldset", {}, h("legend", {}, "Current portfolio (weights 0..1; the rest is cash)"), rows,
      h("div", { class: "actions" }, add)),
    h("fieldset", { class: "grid" }, h("legend", {}, "Risk profile"),
      field("Risk tolerance", tolerance, "0 cautious … 1 aggressive"),
      field("Largest position", maxPosition, "the most any one asset may weigh"),
      field("Horizon", horizon),
      field("Never hold", exclude, "Ctrl/Cmd-click to pick several"),
      field("As of (optional)", date, `default: the latest date, ${asOf}`)),
    h("div", { class: "actions" }, submit));
  f.addEventListener("submit", (event) => {
    event.preventDefault();
    const portfolio = {};
    for (const row of rows.children) {
      const [sym, w] = row.querySelectorAll("select, input");
      portfolio[sym.value] = (portfolio[sym.value] || 0) + Number(w.value);
    }
    const body = {
      portfolio,
      risk_profile: { risk_tolerance: Number(tolerance.value), max_position: Number(maxPosition.value),
        exclude: [...exclude.selectedOptions].map((o) => o.value), horizon_days: Number(horizon.value) },
    };
    if (date.value) body.as_of = date.value;
    busy(submit, async () => {
      const rec = await api("v1/recommendations", { method: "POST", body });
      showRecommendation(out, rec, portfolio);
      out.querySelector("h2").focus();
    });
  });
  return f;
}

function showRecommendation(out, rec, current) {
  const symbols = Object.keys(rec.target_weights).filter((s) => s !== CASH);
  const held = [...new Set([...symbols, ...Object.keys(current)])]
    .filter((s) => (rec.target_weights[s] || 0) > 1e-6 || (current[s] || 0) > 1e-6)
    .sort((a, b) => (rec.target_weights[b] || 0) - (rec.target_weights[a] || 0));
  const currentCash = Math.max(0, 1 - Object.values(current).reduce((a, b) => a + b, 0));
  const labels = [...held, CASH];
  const weightsChart = chart("Target against current weights", {
    type: "bar",
    data: { labels, datasets: [
      { label: "current", backgroundColor: COLORS[4], data: labels.map((s) => (s === CASH ? currentCash : current[s] || 0)) },
      { label: "target", backgroundColor: COLORS[0], data: labels.map((s) => rec.target_weights[s] || 0) },
    ] },
    options: { scales: { y: percentAxis() },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${pct(c.raw)}` } } } },
  });
  weightsChart.id = "weights-chart";
  const changed = rec.checks.filter((c) => c.changed);
  const status = rec.status === "pending_approval"
    ? h("div", { class: "status warn" }, h("strong", {}, "Pending approval"),
      ` — not executable until an admin approves it (expires ${when(rec.valid_until)}).`,
      rec.approval_reasons.length ? h("ul", {}, rec.approval_reasons.map((r) => h("li", {}, r))) : null)
    : h("div", { class: "status ok" }, h("strong", {}, "OK"), ` — executable${rec.valid_until ? `, valid until ${when(rec.valid_until)}` : ""}.`);
  const expected = labels.filter((s) => s !== CASH).map((s) => [s, pct(rec.target_weights[s] || 0),
    signedPct(rec.trades[s] || 0), signedPct(rec.expected_returns[s], 2), pct(rec.confidence[s], 0)]);
  const explainButton = h("button", { type: "button" }, "Explain this recommendation");
  const explanation = h("div", { id: "explanation" });
  explainButton.addEventListener("click", () => busy(explainButton, async () => {
    const data = await api("v1/explanations", { method: "POST", body: { request_id: rec.request_id } });
    showExplanation(explanation, data, held);
  }));
  replace(out,
    h("section", { class: "card", "aria-labelledby": "rec-title" },
      h("h2", { id: "rec-title", tabindex: "-1" }, `Recommendation for ${rec.as_of}`),
      status,
      h("p", { class: "muted" }, `Request ${rec.request_id} · models ${Object.entries(rec.model_versions)
        .map(([k, v]) => `${k} ${v}`).join(", ")}`),
      h("dl", { class: "facts" },
        h("dt", {}, "Volatility (annual)"), h("dd", {}, pct(rec.portfolio_risk.volatility)),
        h("dt", {}, "1-day VaR 95%"), h("dd", {}, pct(rec.portfolio_risk.var_95, 2)),
        h("dt", {}, "1-day CVaR 95%"), h("dd", {}, pct(rec.portfolio_risk.cvar_95, 2))),
      weightsChart),
    section("Checks that changed the weights", changed.length
      ? table(["Check", "What it did", "Weight moved"], changed.map((c) => [c.name, c.detail, pct(c.amount, 1)]), { numeric: [2] })
      : h("p", {}, "No check changed anything."),
    h("p", { class: "muted" }, `Also checked, no change: ${rec.checks.filter((c) => !c.changed).map((c) => c.name).join(", ") || "none"}.`)),
    section("Weights, trades and expected returns",
      table(["Symbol", "Target", "Trade", "Expected return", "Confidence"], expected, { numeric: [1, 2, 3, 4],
        caption: "Expected return: the ensemble's forecast of the horizon's log return; confidence 0..1" })),
    h("div", { class: "actions" }, explainButton),
    explanation);
}

function showExplanation(out, data, held) {
  const assets = Object.keys(data.assets);
  const first = held.find((s) => assets.includes(s)) || assets[0];
  const picker = h("select", { id: "explain-asset" }, assets.map((s) => h("option", { value: s, selected: s === first }, s)));
  const detail = h("div");
  function draw() {
    const a = data.assets[picker.value];
    const bars = (title, attributions, id) => {
      const sorted = [...attributions].sort((x, y) => Math.abs(y.contribution) - Math.abs(x.contribution));
      const fig = chart(title, {
        type: "bar",
        data: { labels: sorted.map((x) => x.feature), datasets: [{ label: "contribution",
          backgroundColor: sorted.map((x) => (x.contribution >= 0 ? COLORS[2] : COLORS[5])),
          data: sorted.map((x) => x.contribution) }] },
        options: { indexAxis: "y", plugins: { legend: { display: false },
          tooltip: { callbacks: { label: (c) => signedPct(c.raw, 3) } } }, scales: { x: percentAxis(2) } },
      });
      fig.id = id;
      return fig;
    };
    replace(detail,
      h("p", { class: "rationale" }, a.rationale),
      h("p", { class: "muted" }, `Expected return ${signedPct(a.expected_return, 2)} = base ${signedPct(a.base_value, 2)} + the contributions below.`),
      bars(`What moved ${picker.value}'s expected return (contribution by feature group)`, a.attributions, "attribution-chart"),
      a.policy_attributions ? [h("p", { class: "rationale" }, a.policy_rationale),
        bars(`What moved the policy's weight for ${picker.value} (${pct(a.policy_weight)} before risk checks)`,
          a.policy_attributions, "policy-chart")] : null);
  }
  picker.addEventListener("change", draw);
  replace(out, h("section", { class: "card", "aria-labelledby": "exp-title" },
    h("h2", { id: "exp-title" }, `Explanation (${data.horizon_days}-day horizon, ${data.as_of})`),
    h("div", { class: "field inline" }, h("label", { for: "explain-asset" }, "Asset"), picker),
    detail,
    h("details", {}, h("summary", {}, "Every asset's rationale"),
      table(["Symbol", "Expected return", "Rationale"], assets.map((s) => [s, signedPct(data.assets[s].expected_return, 2),
        data.assets[s].rationale]), { numeric: [1] })),
    h("p", { class: "muted small" }, data.method),
    h("p", { class: "disclaimer" }, data.disclaimer)));
  draw();
}
