// The model catalog (GET /v1/models: the registry's models, their stages and versions, and the
// forecaster families' catalog), filtered by category, use case and latency class; a model's detail
// view; promote and roll back for admin keys (confirmed first); a selection to compare.

import { api, busy, session } from "../api.js";
import { field, h, replace, section, table } from "../dom.js";
import { metric, when } from "../format.js";

export const TITLE = "Models";

/** "lstm-forecaster" -> {family: "lstm", category: "forecaster"} */
export function describe(name) {
  const match = /^(.*)-(forecaster|allocator)$/.exec(name);
  return match ? { family: match[1], category: match[2] } : { family: name, category: "other" };
}

export async function render(main, ctx) {
  const data = await api("v1/models");
  session.admin = Boolean(data.admin);
  const catalog = Object.fromEntries((data.catalog || []).map((spec) => [spec.family, spec]));
  if (ctx.args[0]) return detail(main, ctx, data, catalog, ctx.args[0]);
  return list(main, data, catalog);
}

function list(main, data, catalog) {
  const rows = data.models.map((m) => ({ ...m, ...describe(m.name), spec: catalog[describe(m.name).family] }));
  const useCases = [...new Set(Object.values(catalog).flatMap((s) => s.use_cases))];
  const latencies = [...new Set(Object.values(catalog).map((s) => s.latency_class))];
  const select = (name, options) => h("select", { name }, h("option", { value: "" }, "any"),
    options.map((o) => h("option", { value: o }, o)));
  const category = select("category", [...new Set(rows.map((r) => r.category))]);
  const useCase = select("use_case", useCases);
  const latency = select("latency", latencies);
  const text = h("input", { type: "search", name: "q", placeholder: "name or family" });
  const body = h("tbody");
  const count = h("p", { class: "muted", role: "status" });
  const compareButton = h("button", { type: "button", disabled: true }, "Compare selected");
  const chosen = new Set();

  function draw() {
    const q = text.value.trim().toLowerCase();
    const shown = rows.filter((r) => (!category.value || r.category === category.value)
      && (!useCase.value || (r.spec && r.spec.use_cases.includes(useCase.value)))
      && (!latency.value || (r.spec && r.spec.latency_class === latency.value))
      && (!q || r.name.toLowerCase().includes(q)));
    replace(body, shown.map((r) => {
      const box = h("input", { type: "checkbox", "aria-label": `select ${r.name} to compare`, checked: chosen.has(r.name) });
      box.addEventListener("change", () => {
        if (box.checked) chosen.add(r.name);
        else chosen.delete(r.name);
        compareButton.disabled = chosen.size < 2;
      });
      return h("tr", {},
        h("td", {}, box),
        h("td", {}, h("a", { href: `#/models/${encodeURIComponent(r.name)}` }, r.name)),
        h("td", {}, r.category),
        h("td", {}, r.family),
        h("td", {}, r.stages.production || "—"),
        h("td", {}, r.stages.staging || "—"),
        h("td", { class: "num" }, String(r.versions.length)),
        h("td", { class: "wide-only" }, r.spec ? r.spec.latency_class : "—"));
    }));
    count.textContent = `${shown.length} of ${rows.length} models`;
  }
  for (const control of [category, useCase, latency]) control.addEventListener("change", draw);
  text.addEventListener("input", draw);
  compareButton.addEventListener("click", () => {
    location.hash = `#/compare?models=${[...chosen].map(encodeURIComponent).join(",")}`;
  });
  replace(main,
    h("h1", {}, "Models"),
    h("form", { class: "filters", "aria-label": "Filter the models", onsubmit: (e) => e.preventDefault() },
      field("Category", category), field("Use case", useCase), field("Latency class", latency), field("Search", text)),
    count,
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", {}, "Registered models (select two or more to compare their production versions)"),
      h("thead", {}, h("tr", {}, ["Compare", "Model", "Category", "Family", "Production", "Staging", "Versions",
        "Latency class"].map((x, i) => h("th", { scope: "col", class: i === 6 ? "num" : i === 7 ? "wide-only" : null }, x)))),
      body)),
    h("div", { class: "actions" }, compareButton),
    section("Forecaster families", Object.values(catalog).map((s) => h("div", { class: "spec" },
      h("h3", {}, s.family), h("p", {}, s.summary),
      h("p", {}, h("strong", {}, "Use cases: "), s.use_cases.join("; ")),
      h("p", {}, h("strong", {}, "Latency: "), s.latency_class)))));
  draw();
}

function detail(main, ctx, data, catalog, name) {
  const card = data.models.find((m) => m.name === name);
  if (!card) {
    replace(main, h("h1", {}, name), h("p", {}, `No model named ${name}. `, h("a", { href: "#/models" }, "All models")));
    return;
  }
  const { family, category } = describe(name);
  const spec = catalog[family];
  const stageOf = (v) => Object.entries(card.stages).filter(([, x]) => x === v).map(([s]) => s).join(", ") || "—";
  const metricNames = [...new Set(card.versions.flatMap((v) => Object.keys(v.metrics || {})))];
  const dialog = confirmDialog();
  const rows = card.versions.map((v) => [
    v.version, stageOf(v.version), when(v.created_at), v.verified ? "yes" : "NO",
    ...metricNames.map((m) => metric(m, (v.metrics || {})[m])),
    session.admin ? h("div", { class: "row-actions" },
      ["production", "staging"].filter((s) => card.stages[s] !== v.version).map((stage) =>
        h("button", { type: "button", class: "secondary small", onclick: (e) => act(e.currentTarget, dialog, name,
          "promote", stage, v.version) }, `Promote to ${stage}`))) : null,
  ].filter((c) => c !== null));
  const headers = ["Version", "Stage", "Created", "Verified", ...metricNames, ...(session.admin ? ["Actions"] : [])];
  replace(main,
    h("p", {}, h("a", { href: "#/models" }, "← All models")),
    h("h1", {}, name),
    h("dl", { class: "facts" },
      h("dt", {}, "Category"), h("dd", {}, category),
      h("dt", {}, "Family"), h("dd", {}, family),
      h("dt", {}, "Production"), h("dd", {}, card.stages.production || "—"),
      h("dt", {}, "Staging"), h("dd", {}, card.stages.staging || "—"),
      h("dt", {}, "Serving now"), h("dd", {}, (data.serving || {})[name] || "—")),
    section("Versions", table(headers, rows, { numeric: metricNames.map((_, i) => 4 + i) }),
      session.admin ? h("div", { class: "actions" },
        ["production", "staging"].filter((s) => card.stages[s]).map((stage) => h("button", {
          type: "button", class: "danger", onclick: (e) => act(e.currentTarget, dialog, name, "rollback", stage) },
        `Roll back ${stage}`)))
        : h("p", { class: "muted" }, "Promote and roll back need an admin key."),
      h("div", { class: "actions" }, h("a", { class: "button secondary",
        href: `#/compare?models=${card.versions.map((v) => encodeURIComponent(`${name}:${v.version}`)).join(",")}` },
      "Compare these versions"))),
    spec ? section("Specification",
      h("p", {}, spec.summary),
      h("dl", { class: "facts" },
        ...[["Use cases", spec.use_cases], ["Strengths", spec.strengths], ["Weaknesses", spec.weaknesses],
          ["Latency class", spec.latency_class], ["Data needs", spec.data_needs],
          ["Explainability", spec.explainability], ["References", spec.references]]
          .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, Array.isArray(v) ? v.join("; ") : v)])),
      h("details", {}, h("summary", {}, "The family's default hyperparameters"),
        table(["Hyperparameter", "Default"], Object.entries(spec.default_hyperparameters || {})
          .map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]))))
      : section("Specification", h("p", { class: "muted" }, `${category}: no family catalog entry (the catalog `
        + "describes the forecaster families)")),
    dialog);
}

/** A modal <dialog> asking to confirm; ask(text) resolves true when confirmed. */
function confirmDialog() {
  const message = h("p", { id: "confirm-text" });
  const yes = h("button", { type: "submit", value: "yes" }, "Confirm");
  const no = h("button", { type: "submit", value: "no", class: "secondary" }, "Cancel");
  const dialog = h("dialog", { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text" },
    h("form", { method: "dialog" }, h("h2", { id: "confirm-title" }, "Please confirm"), message,
      h("div", { class: "actions" }, yes, no)));
  dialog.ask = (text) => new Promise((resolve) => {
    message.textContent = text;
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
    no.focus();
  });
  return dialog;
}

async function act(button, dialog, name, action, stage, version) {
  const what = action === "promote" ? `Promote ${name} ${version} to ${stage}?` : `Roll back ${name}'s ${stage} `
    + "stage to the version before it?";
  if (!(await dialog.ask(what))) return;
  await busy(button, async () => {
    await api(`v1/models/${encodeURIComponent(name)}/${action}`, { method: "POST",
      query: { version, stage } });
    window.dispatchEvent(new HashChangeEvent("hashchange")); // draw the page again with the new stages
  });
}
