"""The compliance report (serving/compliance.py) as a reader wants it: Markdown for a compliance
officer, JSON for programs, and one long CSV (section, key, value) that a spreadsheet opens."""

from __future__ import annotations

import csv
import io

from rayfolio.serving.compliance import ComplianceReport

# ----- rendering -------------------------------------------------------------------------------


def to_json(report: ComplianceReport) -> str:
    return report.model_dump_json(indent=2) + "\n"


def _rows(prefix: str, value) -> list[tuple[str, str]]:
    """A JSON value flattened to (dotted key, text) pairs; list items are numbered from 1."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value, 1))
    else:
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return [(prefix, text)]
    return [row for key, v in items for row in _rows(f"{prefix}.{key}" if prefix else str(key), v)]


def to_csv(report: ComplianceReport) -> str:
    """Long format: one (section, key, value) row per figure, e.g. ``checks,position_cap.changed,3``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("section", "key", "value"))
    for section, value in report.model_dump(mode="json").items():
        writer.writerows((section, key, text) for key, text in _rows("", value))
    return out.getvalue()


def _table(headers: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def to_markdown(report: ComplianceReport) -> str:
    """The report as a compliance officer reads it: plain sentences and tables."""
    db, gaps, recs, appr = report.database, report.gaps, report.recommendations, report.approvals
    start = db.window_start.isoformat() if db.window_start else "the first record"
    end = db.window_end.isoformat() if db.window_end else "the last record"
    chain = (f"intact: all {db.chain.records} records verified" if db.chain.ok
             else f"BROKEN at record {db.chain.first_bad_seq}: {db.chain.reason} "
                  f"({db.chain.records} records verified before it)")  # fmt: skip
    head = "the log is empty" if db.last_seq is None else f"last record {db.last_seq}, hash `{db.last_hash}`"
    check_table = _table(("check", "evaluated", "changed", "total change", "mean change", "change unknown"),
                         [(name, c.evaluated, c.changed, c.amount_total, c.amount_mean, c.amount_unknown)
                          for name, c in report.checks.items()])  # fmt: skip
    parts = [
        "# Audit compliance report",
        f"Generated {report.generated_at.isoformat(timespec='seconds')} from `{db.url}`.\n"
        f"Window: records created from {start} to {end} (UTC days, both included): {db.records_in_window} records.",
        "## Audit chain",
        f"Hash chain of the whole log: {chain}.\nChain head: {head}.",
        _table(("record kind", "records in window"), list(db.records_by_kind.items())),
        "## Gaps",
    ]
    if not gaps.missing and not gaps.breaks:
        parts.append("No missing records and no broken links in the window.")
    if gaps.missing:
        parts.append("Missing records:\n\n" + _table(("first missing", "last missing", "after record", "before record"),
                     [(m.first, m.last, m.after_seq, m.before_seq) for m in gaps.missing]))  # fmt: skip
    if gaps.breaks:
        parts.append("Records not linked to the record before them:\n\n" + _table(
            ("record", "its prev_hash", "hash of the record before"),
            [(b.seq, b.prev_hash, b.previous_hash) for b in gaps.breaks]))  # fmt: skip
    parts += [
        "## Recommendations",
        f"{recs.total} recommendations; status as of the report's time:",
        _table(("status", "recommendations"), list(recs.by_status.items())),
        "By API key (the key's hashed id):",
        _table(("key id", "recommendations"), list(recs.by_key.items())),
        "By as-of date:",
        _table(("as of", "recommendations"), list(recs.by_as_of.items())),
        "## Risk checks",
        "How often each check changed the proposed weights, and by how much (sum of |weight change|).",
        check_table,
        "## Approvals",
        f"{appr.approved} approved, {appr.rejected} rejected in the window; latency from recommendation to "
        f"decision: median {_seconds(appr.latency_p50_s)}, longest {_seconds(appr.latency_max_s)}.",
    ]
    if appr.decisions:
        parts.append(_table(("recommendation", "decision", "reason", "by", "decided at", "latency (s)"),
                            [(rid, d.decision, d.reason, d.by, d.decided_at, d.latency_s)
                             for rid, d in appr.decisions.items()]))  # fmt: skip
    parts.append("## Experiments")
    if not report.experiments:
        parts.append("No experiment in the window.")
    for name, e in report.experiments.items():
        parts.append(f"### {name} (model {', '.join(e.models) or '-'})")
        parts.append(_table(("arm", "versions", "assigned", "served", "fallbacks", "errors"),
                            [(arm, ", ".join(a.versions) or "-", a.assigned, a.served, a.fallbacks, a.errors)
                             for arm, a in e.arms.items()]))  # fmt: skip
        c = e.conclusion
        parts.append("Not concluded in the window." if c is None else
                     f"Concluded: {c.action} (control {c.control}, candidate {c.candidate}) by {c.by} at "
                     f"{c.decided_at}, record {c.seq}.")  # fmt: skip
    return "\n\n".join(parts) + "\n"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} s"
