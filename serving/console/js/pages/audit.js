// The audit log (admin): the hash chain's status and the latest records (GET /v1/audit), and the
// compliance report's figures (GET /v1/audit/report). A user key gets the API's 403, shown as such.

import { api } from "../api.js";
import { h, replace, section, table } from "../dom.js";
import { int, pct, when } from "../format.js";

export const TITLE = "Audit";

export async function render(main, ctx) {
  const [log, report] = await Promise.all([api("v1/audit", { query: { limit: 50 } }), api("v1/audit/report")]);
  if (!ctx.alive()) return;
  const chain = log.chain;
  const records = [...log.records].sort((a, b) => b.seq - a.seq);
  const recs = report.recommendations || {};
  const checks = report.checks || {};
  replace(main, h("h1", {}, TITLE),
    section("Hash chain",
      h("p", { class: chain.ok ? "status ok" : "status bad", id: "chain-status" },
        chain.ok ? `Intact: ${int(chain.records)} records verified.`
          : `BROKEN at record ${chain.first_bad_seq}: ${chain.reason}`)),
    section("Compliance figures",
      h("p", { class: "muted" }, `Report generated ${when(report.generated_at)}; ${int((report.database || {}).records_in_window)} records.`),
      table(["Recommendations", "Count"], [["total", int(recs.total)],
        ...Object.entries(recs.by_status || {}).map(([k, v]) => [k, int(v)])], { numeric: [1] }),
      table(["Check", "Evaluated", "Changed", "Share changed", "Mean weight moved"], Object.entries(checks).map(([name, c]) =>
        [name, int(c.evaluated), int(c.changed), c.evaluated ? pct(c.changed / c.evaluated) : "—", pct(c.amount_mean, 2)]),
      { numeric: [1, 2, 3, 4] }),
      h("p", {}, `Gaps in the sequence: ${((report.gaps || {}).missing || []).length}, chain breaks: `
        + `${((report.gaps || {}).breaks || []).length}.`)),
    section("Latest records",
      table(["Seq", "When", "Kind", "Key", "Request"], records.map((r) => [String(r.seq), when(r.created_at), r.kind, r.key_id,
        r.request_id || "—"]), { numeric: [0] })));
}
