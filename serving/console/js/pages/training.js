// Training jobs (admin): a form built from GET /v1/jobs/catalog (each allowed command's JSON schema:
// its fields, their limits as the inputs' min/max/step, their defaults), POST /v1/jobs, then the
// job followed by polling GET /v1/jobs/{id} and its log tail until it ends, its metrics when it
// succeeded; the service's jobs listed (GET /v1/jobs).

import { api, busy, showError } from "../api.js";
import { field, h, replace, section, table } from "../dom.js";
import { metric, when } from "../format.js";

export const TITLE = "Training";
const DONE = new Set(["SUCCEEDED", "FAILED", "STOPPED"]);
const POLL_MS = 1500;

export async function render(main, ctx) {
  if (ctx.args[0]) return follow(main, ctx, ctx.args[0]);
  const [catalog, jobs] = await Promise.all([api("v1/jobs/catalog"), api("v1/jobs")]);
  if (!ctx.alive()) return;
  replace(main, h("h1", {}, TITLE), jobForm(catalog), section("Jobs", jobsTable(jobs.jobs)));
}

/** A property's own schema: the non-null branch of an Optional (anyOf [X, {type: null}]). */
function own(prop) {
  const branches = prop.anyOf || prop.oneOf;
  if (!branches) return prop;
  return { ...prop, ...(branches.find((b) => b.type !== "null") || {}) };
}

/** One form control per field of the command's schema; returns {node, read()} (read: value or undefined). */
function control(name, prop, required, catalog) {
  const p = own(prop);
  const title = p.title || prop.title || name;
  const hint = [prop.description || p.description, limits(p), required ? "required" : "optional"].filter(Boolean).join(" · ");
  const choices = p.enum || (name === "config" && catalog.configs) || (name === "family" && catalog.families) || null;
  let input;
  let read;
  if (p.const !== undefined) {
    return null; // one allowed value (e.g. the data source): the API's default, nothing to choose
  } else if (p.type === "string" && p.format === "date") {
    input = h("input", { type: "date", name, required: required || null });
    read = () => (input.value === "" ? undefined : input.value);
  } else if (choices) {
    input = h("select", { name }, required ? null : h("option", { value: "" }, "(default)"),
      choices.map((c) => h("option", { value: c, selected: c === prop.default }, String(c))));
    read = () => (input.value === "" ? undefined : choices.find((c) => String(c) === input.value));
  } else if (p.type === "integer" || p.type === "number") {
    const min = p.minimum ?? (p.exclusiveMinimum !== undefined ? p.exclusiveMinimum + (p.type === "integer" ? 1 : 0) : undefined);
    const max = p.maximum ?? (p.exclusiveMaximum !== undefined ? p.exclusiveMaximum - (p.type === "integer" ? 1 : 0) : undefined);
    input = h("input", { type: "number", name, min, max, step: p.type === "integer" ? 1 : p.multipleOf || "any",
      value: prop.default ?? undefined, required: required || null });
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else if (p.type === "boolean") {
    input = h("input", { type: "checkbox", name, checked: prop.default === true });
    read = () => input.checked;
  } else if (p.type === "string") {
    const long = /yaml|text/i.test(name) || (p.maxLength || 0) > 200;
    input = long ? h("textarea", { name, rows: 8, spellcheck: "false", maxlength: p.maxLength })
      : h("input", { type: "text", name, pattern: p.pattern, maxlength: p.maxLength, minlength: p.minLength,
        value: prop.default ?? undefined, required: required || null });
    read = () => (input.value === "" ? undefined : input.value);
  } else {
    return null; // a nested object: not offered by this form (the API's defaults apply)
  }
  const node = field(title, input, hint);
  if (input.tagName === "TEXTAREA") node.classList.add("span-all");
  return { node, read };
}

function limits(p) {
  const parts = [];
  if (p.minimum !== undefined) parts.push(`≥ ${p.minimum}`);
  if (p.exclusiveMinimum !== undefined) parts.push(`> ${p.exclusiveMinimum}`);
  if (p.maximum !== undefined) parts.push(`≤ ${p.maximum}`);
  if (p.exclusiveMaximum !== undefined) parts.push(`< ${p.exclusiveMaximum}`);
  return parts.join(", ");
}

function jobForm(catalog) {
  const commands = catalog.commands || [];
  const command = h("select", { name: "command", id: "job-command" }, commands.map((c) => h("option", { value: c.command },
    c.command)));
  const summary = h("p", { class: "muted", id: "job-summary" });
  const fields = h("div", { class: "grid" });
  let readers = [];
  function build() {
    const spec = commands.find((c) => c.command === command.value);
    const schema = (spec && spec.schema) || { properties: {} };
    const required = new Set(schema.required || []);
    readers = [];
    summary.textContent = spec ? (spec.summary || "").replaceAll("``", "") : "";
    const nodes = [];
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      if (name === "command") continue;
      const c = control(name, prop, required.has(name), catalog);
      if (!c) continue;
      readers.push([name, c.read]);
      nodes.push(c.node);
    }
    replace(fields, nodes.length ? nodes : h("p", { class: "muted" }, "This command takes no settings."));
  }
  command.addEventListener("change", build);
  build();
  const submit = h("button", { type: "submit" }, "Start the job");
  const form = h("form", { class: "card", "aria-label": "Start a training job" },
    h("h2", {}, "Start a job"),
    field("Command", command), summary, fields,
    h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { command: command.value };
    for (const [name, read] of readers) {
      const value = read();
      if (value !== undefined) body[name] = value;
    }
    busy(submit, async () => {
      const job = await api("v1/jobs", { method: "POST", body });
      location.hash = `#/training/${encodeURIComponent(job.job_id)}`;
    });
  });
  return form;
}

function jobsTable(jobs) {
  if (!jobs.length) return h("p", { class: "muted" }, "No jobs yet.");
  return table(["Job", "Command", "Status", "Started", "Ended", "By"], jobs.map((j) => [
    h("a", { href: `#/training/${encodeURIComponent(j.job_id)}` }, j.job_id), j.command,
    h("span", { class: `job-status ${String(j.status).toLowerCase()}` }, j.status), when(j.start_time), when(j.end_time),
    j.submitted_by || "—"]));
}

/** One job: its status, log tail and (once succeeded) metrics, polled while the page is shown. */
async function follow(main, ctx, id) {
  const status = h("p", { id: "job-status", role: "status", "aria-live": "polite" }, "…");
  const info = h("div");
  const log = h("pre", { id: "job-log", class: "log", tabindex: "0", "aria-label": "log tail" });
  const metrics = h("div", { id: "job-metrics" });
  const stop = h("button", { type: "button", class: "danger" }, "Stop the job");
  stop.addEventListener("click", () => busy(stop, async () => {
    const r = await api(`v1/jobs/${encodeURIComponent(id)}/stop`, { method: "POST" });
    status.textContent = `${r.stopped ? "Stop requested" : "Not stopped"}: ${r.status}`;
  }));
  replace(main, h("p", {}, h("a", { href: "#/training" }, "← All jobs")), h("h1", {}, `Job ${id}`),
    section("Status", status, info, h("div", { class: "actions" }, stop)),
    section("Log (last 100 lines)", log), section("Metrics", metrics));
  for (;;) {
    let job;
    try {
      const [j, tail] = await Promise.all([api(`v1/jobs/${encodeURIComponent(id)}`),
        api(`v1/jobs/${encodeURIComponent(id)}/logs`, { query: { tail: 100 } })]);
      job = j;
      if (!ctx.alive()) return;
      log.textContent = tail.lines.join("\n") || "(no output yet)";
      log.scrollTop = log.scrollHeight;
    } catch (err) {
      if (!ctx.alive()) return;
      showError(err);
      if (err.status && err.status < 500) return; // unknown job, no access: polling again will not help
      await sleep(POLL_MS * 2);
      continue;
    }
    status.textContent = `${job.status}${job.message ? ` — ${job.message}` : ""}`;
    status.className = `job-status ${String(job.status).toLowerCase()}`;
    replace(info, h("dl", { class: "facts" },
      h("dt", {}, "Command"), h("dd", {}, job.command),
      h("dt", {}, "Runs"), h("dd", {}, h("code", {}, job.entrypoint || "—")),
      h("dt", {}, "Submitted by"), h("dd", {}, job.submitted_by || "—"),
      h("dt", {}, "Started"), h("dd", {}, when(job.start_time)),
      h("dt", {}, "Ended"), h("dd", {}, when(job.end_time))));
    stop.hidden = DONE.has(job.status);
    if (DONE.has(job.status)) {
      replace(metrics, job.metrics ? metricsView(job.metrics)
        : h("p", { class: "muted" }, job.status === "SUCCEEDED" ? "The job wrote no metrics." : `No metrics: the job ${job.status.toLowerCase()}.`));
      return;
    }
    replace(metrics, h("p", { class: "muted" }, "Metrics appear when the job has succeeded."));
    await sleep(POLL_MS);
    if (!ctx.alive()) return;
  }
}

/** Nested metrics as rows "a · b" -> value. */
function metricsView(metrics) {
  const rows = [];
  const walk = (x, prefix) => {
    if (Array.isArray(x)) {
      x.forEach((item, i) => walk(item, `${prefix}[${i}]`));
    } else if (x && typeof x === "object") {
      for (const [k, v] of Object.entries(x)) walk(v, prefix ? `${prefix} · ${k}` : k);
    } else {
      rows.push([prefix, metric(prefix, x)]);
    }
  };
  walk(metrics, "");
  return table(["Metric", "Value"], rows.slice(0, 300), { numeric: [1] });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
