// Goal planning (POST /v1/plans): the probability of reaching a goal with its interval, the monthly
// contribution a target probability needs, the years needed, a fan chart of wealth over the horizon
// (5-95 and 25-75 percentile bands, the median line), the caveat and the provenance.

import { api, busy } from "../api.js";
import { chart } from "../charts.js";
import { field, h, replace, section, table } from "../dom.js";
import { currency, int, num, pct } from "../format.js";

export const TITLE = "Plan";

export async function render(main, ctx) {
  const listed = await api("v1/plans/strategies");
  if (!ctx.alive()) return;
  const out = h("div", { id: "plan-result" });
  replace(main, h("h1", {}, "Plan a goal"), form(listed.strategies, listed.default, out), out);
}

function form(strategies, preferred, out) {
  const number = (name, value, attrs) => h("input", { type: "number", name, value, required: true, ...attrs });
  const initial = number("initial_wealth", 50000, { min: 0, step: "any" });
  const goal = number("goal", 250000, { min: 1, step: "any" });
  const years = number("horizon_years", 15, { min: 1, max: 40, step: 1 });
  const monthly = number("monthly_contribution", 500, { min: 0, step: "any" });
  const target = number("target_probability", 0.8, { min: 0.01, max: 0.99, step: 0.01 });
  const paths = number("paths", 10000, { min: 100, step: 100 });
  const seed = number("seed", 0, { min: 0, step: 1 });
  // Each strategy's daily net returns from the backtest: a served risk profile or a backtested strategy.
  const strategy = h("select", { name: "strategy" }, strategies.map((s) => h("option", { value: s.name,
    selected: s.name === preferred }, `${s.name}${s.served ? " (served profile)" : ""}, ${s.data_start} to ${s.data_end}`)));
  const submit = h("button", { type: "submit" }, "Run the plan");
  const f = h("form", { class: "card", "aria-label": "Your goal" },
    h("fieldset", { class: "grid" }, h("legend", {}, "Your goal"),
      field("Starting wealth ($)", initial), field("Goal ($)", goal), field("Horizon (years)", years, "1 to 40"),
      field("Monthly contribution ($)", monthly), field("Strategy", strategy, "a served risk profile or a backtested strategy"),
      field("Target probability", target, "between 0 and 1, e.g. 0.8")),
    h("details", {}, h("summary", {}, "Simulation settings"),
      h("div", { class: "grid" }, field("Paths", paths), field("Seed", seed, "the same seed gives the same answer"))),
    h("div", { class: "actions" }, submit));
  f.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { initial_wealth: Number(initial.value), goal: Number(goal.value), horizon_years: Number(years.value),
      monthly_contribution: Number(monthly.value), strategy: strategy.value,
      target_probability: Number(target.value), paths: Number(paths.value), seed: Number(seed.value) };
    busy(submit, async () => show(out, await api("v1/plans", { method: "POST", body }), body));
  });
  return f;
}

function show(out, plan, asked) {
  const [lo, hi] = plan.probability_ci;
  const years = plan.fan.map((p) => p.year);
  const band = (key) => plan.fan.map((p) => p[key]);
  const fill = "rgba(31, 95, 168, 0.15)";
  const fan = chart("Wealth over the horizon: 5–95 and 25–75 percentile bands, the median, and the goal", {
    type: "line",
    data: { labels: years, datasets: [
      { label: "5th percentile", data: band("p5"), borderColor: "rgba(31,95,168,0.35)", pointRadius: 0, fill: false },
      { label: "95th percentile", data: band("p95"), borderColor: "rgba(31,95,168,0.35)", backgroundColor: fill, pointRadius: 0, fill: "-1" },
      { label: "25th percentile", data: band("p25"), borderColor: "rgba(31,95,168,0.6)", pointRadius: 0, fill: false },
      { label: "75th percentile", data: band("p75"), borderColor: "rgba(31,95,168,0.6)", backgroundColor: "rgba(31,95,168,0.3)", pointRadius: 0, fill: "-1" },
      { label: "median", data: band("p50"), borderColor: "#1f5fa8", borderWidth: 2.5, pointRadius: 0, fill: false },
      { label: "goal", data: years.map(() => asked.goal), borderColor: "#c0392b", borderDash: [6, 4], pointRadius: 0, fill: false },
    ] },
    options: { interaction: { mode: "index", intersect: false },
      scales: { x: { title: { display: true, text: "years from now" } },
        y: { ticks: { callback: (v) => currency(v) } } },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${currency(c.raw)}` } } } },
  }, { tall: true });
  fan.id = "fan-chart";
  const tw = plan.terminal_wealth;
  const prov = plan.provenance || {};
  replace(out,
    h("section", { class: "card", "aria-labelledby": "plan-title" },
      h("h2", { id: "plan-title" }, "Your plan"),
      h("div", { class: "figures" },
        h("div", { class: "figure" }, h("span", { class: "label" }, "Probability of reaching the goal"),
          h("span", { class: "value", id: "plan-probability" }, pct(plan.probability)),
          h("span", { class: "muted" }, `95% interval ${pct(lo)} – ${pct(hi)}`)),
        h("div", { class: "figure" }, h("span", { class: "label" }, `Monthly contribution for ${pct(plan.target_probability, 0)}`),
          h("span", { class: "value" }, plan.reachable ? currency(plan.required_monthly_contribution) : "not reachable"),
          h("span", { class: "muted" }, plan.reachable ? `you give ${currency(asked.monthly_contribution)}`
            : "no contribution within the cap reaches the target in time")),
        h("div", { class: "figure" }, h("span", { class: "label" }, `Years needed at ${currency(asked.monthly_contribution)}/month`),
          h("span", { class: "value" }, plan.years_needed === null || plan.years_needed === undefined ? "over 40" : num(plan.years_needed, 1)),
          h("span", { class: "muted" }, `to reach ${pct(plan.target_probability, 0)}`))),
      fan),
    section("Wealth at the horizon",
      table(["Percentile", "Wealth"], [["5th", currency(tw.p5)], ["25th", currency(tw.p25)], ["median", currency(tw.p50)],
        ["75th", currency(tw.p75)], ["95th", currency(tw.p95)]], { numeric: [1] })),
    h("section", { class: "card" }, h("h2", {}, "Read this first"), h("p", { class: "caveat" }, plan.caveat),
      h("dl", { class: "facts" },
        h("dt", {}, "Strategy"), h("dd", {}, prov.strategy),
        h("dt", {}, "Data"), h("dd", {}, `${prov.data_start} to ${prov.data_end} (${int(prov.days)} days)`),
        h("dt", {}, "Simulation"), h("dd", {}, `${int(prov.paths)} paths × ${int(prov.months)} months, stationary block `
          + `bootstrap, mean block ${prov.block_length} days, seed ${prov.seed}`))));
}
