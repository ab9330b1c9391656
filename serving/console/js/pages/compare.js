// Two or more models or versions side by side (GET /v1/models/compare): their metrics table and the
// Rank IC by calendar year of their families' out-of-sample forecasts as a chart.

import { api } from "../api.js";
import { chart, COLORS } from "../charts.js";
import { h, replace, section, table } from "../dom.js";
import { metric, num } from "../format.js";

export const TITLE = "Compare models";

export async function render(main, ctx) {
  const wanted = (ctx.query.get("models") || "").split(",").filter(Boolean);
  const horizon = ctx.query.get("horizon") || "20";
  const catalog = await api("v1/models");
  const picker = pickerForm(catalog.models, wanted, horizon);
  if (wanted.length < 2) {
    replace(main, h("h1", {}, TITLE), picker,
      h("p", { class: "muted" }, "Choose two or more models or versions, then Compare."));
    return;
  }
  const data = await api("v1/models/compare", { query: { models: wanted.join(","), horizon } });
  if (!ctx.alive()) return;
  replace(main, h("h1", {}, TITLE), picker, ...results(data));
}

/** Checkboxes for every model (its production version) and every version; Compare sets the hash. */
function pickerForm(models, wanted, horizon) {
  const chosen = new Set(wanted);
  const boxes = [];
  const groups = models.map((m) => h("fieldset", { class: "pick" }, h("legend", {}, m.name),
    [m.name, ...m.versions.map((v) => `${m.name}:${v.version}`)].map((entry) => {
      const box = h("input", { type: "checkbox", value: entry, checked: chosen.has(entry) });
      boxes.push(box);
      const label = entry === m.name ? `production (${m.stages.production || "none"})` : entry.split(":")[1];
      return h("label", { class: "check" }, box, ` ${label}`);
    })));
  const horizonSelect = h("select", { name: "horizon" }, ["5", "20", "60"].map((x) =>
    h("option", { value: x, selected: x === horizon }, `${x} days`)));
  const form = h("form", { class: "card", "aria-label": "Choose what to compare" },
    h("div", { class: "pick-grid" }, groups),
    h("div", { class: "field inline" }, h("label", { for: "cmp-horizon" }, "Rank IC horizon"), horizonSelect),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Compare")));
  horizonSelect.id = "cmp-horizon";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const picked = boxes.filter((b) => b.checked).map((b) => encodeURIComponent(b.value));
    location.hash = `#/compare?models=${picked.join(",")}&horizon=${horizonSelect.value}`;
  });
  return form;
}

/** {"validation": {"rank_ic@5": x}} -> {"validation · rank_ic@5": x} */
function flatten(metrics, prefix = "") {
  const out = {};
  for (const [k, v] of Object.entries(metrics || {})) {
    const name = prefix ? `${prefix} · ${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flatten(v, name));
    else if (!Array.isArray(v)) out[name] = v;
  }
  return out;
}

function results(data) {
  const columns = data.models.map((m) => `${m.name} ${m.version}${m.stage ? ` (${m.stage})` : ""}`);
  const flat = data.models.map((m) => flatten(m.metrics));
  const names = [...new Set(flat.flatMap((f) => Object.keys(f)))];
  const rows = [["family", ...data.models.map((m) => m.family || "—")], ...names.map((n) => [n, ...flat.map((f) => metric(n, f[n]))])];
  const byYear = data.rank_ic_by_year || {};
  const families = Object.keys(byYear);
  const years = [...new Set(families.flatMap((f) => Object.keys(byYear[f])))].sort();
  const out = [section("Metrics", table(["Metric", ...columns], rows, { numeric: columns.map((_, i) => i + 1) }))];
  if (families.length && years.length) {
    const figure = chart(`Rank IC by calendar year (${data.rank_ic_source || "out of sample"})`, {
        type: "bar",
        data: { labels: years, datasets: families.map((f, i) => ({ label: f, backgroundColor: COLORS[i % COLORS.length],
          data: years.map((y) => byYear[f][y] ?? null) })) },
        options: { scales: { y: { title: { display: true, text: "Rank IC" } } },
          plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${num(c.raw, 4)}` } } } },
      });
    figure.id = "rankic-chart";
    out.push(section("Rank IC by year", figure,
      table(["Year", ...families], years.map((y) => [y, ...families.map((f) => num(byYear[f][y], 4))]),
        { numeric: families.map((_, i) => i + 1), caption: "The chart's figures" })));
  } else {
    out.push(section("Rank IC by year", h("p", { class: "muted" },
      `No out-of-sample Rank IC for these models${data.rank_ic_source ? ` (${data.rank_ic_source})` : ""}.`)));
  }
  return out;
}
