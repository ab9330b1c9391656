"""The compliance report against figures computed here, independently, from the raw audit rows
(plain sqlite3 and json): every status, key, check, decision and experiment arm; a tampered, a
deleted and a relinked row; the window's two ends; the three renderings."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from rayfolio.serving import approvals
from rayfolio.serving.audit import AuditLog, key_id, sqlite_url
from rayfolio.serving.compliance import ComplianceError, compliance_report, open_audit
from rayfolio.serving.compliance_render import to_csv, to_json, to_markdown
from rayfolio.serving.schemas import PortfolioRisk, RecommendationRequest, RecommendationResponse

ADMIN = key_id("admin-key")
FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
PAST = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def _payload(i: int) -> dict:
    """Recommendation i: statuses, keys, dates and checks vary with i; from i = 20 on, an experiment."""
    status = "pending_approval" if i % 5 in (1, 2) else "ok"
    checks = [
        {"name": "position_cap", "changed": i % 2 == 0, "detail": "capped", "amount": 0.05 * (i % 5) * (i % 2 == 0)},
        {"name": "exclusions", "changed": i % 3 == 0, "detail": "excluded", "amount": 0.1 if i % 3 == 0 else 0.0},
        {"name": "turnover", "changed": False, "detail": "", "amount": 0.0},
    ]  # fmt: skip
    response = RecommendationResponse(
        request_id=f"rec-{i}", as_of=dt.date(2024, 1, 2) + dt.timedelta(days=i % 4),
        target_weights={"AAA": 0.4, "CASH": 0.6}, trades={"AAA": 0.1}, expected_returns={"AAA": 0.01},
        confidence={"AAA": 0.5}, portfolio_risk=PortfolioRisk(volatility=0.1, var_95=0.01, cvar_95=0.02),
        checks=checks, model_versions={"ensemble": "v1"}, status=status, executable=status == "ok",
        valid_until=(FUTURE if i % 5 == 1 else PAST) if status != "ok" else None,
        approval_reasons=["turnover above the portfolio"] if status != "ok" else [],
    )  # fmt: skip
    request = RecommendationRequest.model_validate({"portfolio": {"AAA": 0.3}})
    payload = {"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json")}
    if i >= 20:
        arm = "candidate" if i % 2 else "control"
        failed = arm if i in (23, 25) else None  # the assigned arm failed: the other one served
        served = arm if failed is None else ("control" if arm == "candidate" else "candidate")
        arms = {name: {"version": {"control": "v1", "candidate": "v2"}[name], "latency_ms": 3.0,
                       "target_weights": None if name == failed else {"AAA": 0.4, "CASH": 0.6},
                       "error": "RuntimeError: boom" if name == failed else None}
                for name in ("control", "candidate")}  # fmt: skip
        payload["experiment"] = {"name": "ab-1", "model": "lstm-forecaster", "arm": arm, "served_arm": served,
                                 "arms": arms}  # fmt: skip
        payload["response"]["experiment"] = {"name": "ab-1", "arm": arm, "fallback": failed is not None}
    return payload


def build_log(path: Path) -> AuditLog:
    """30 recommendations (3 keys; ok, pending, expired; an experiment with two fallbacks), one in the
    older format (checks without an amount, no status), 2 approvals, 1 rejection, a conclusion."""
    audit = AuditLog(sqlite_url(path))
    for i in range(30):
        audit.append(key=key_id(f"client-{i % 3}"), request_id=f"rec-{i}", kind="recommendation", payload=_payload(i))
    old = _payload(30)
    for field in ("status", "executable", "valid_until", "approval_reasons", "experiment"):
        old["response"].pop(field)
    for check in old["response"]["checks"]:
        check.pop("amount")
    audit.append(key=key_id("client-old"), request_id="rec-30", kind="recommendation", payload=old)
    approvals.decide(audit, "rec-1", "approved", "within the mandate", ADMIN)
    approvals.decide(audit, "rec-6", "rejected", "too concentrated | for this client", ADMIN)
    audit.append(key=key_id("client-0"), request_id="rec-31", kind="recommendation", payload=_payload(31))
    approvals.decide(audit, "rec-11", "approved", "checked by phone", key_id("other-admin"))
    conclusion = {"name": "ab-1", "model": "lstm-forecaster", "control": "v1", "candidate": "v2", "action": "promote",
                  "by": ADMIN, "decided_at": dt.datetime.now(dt.UTC).isoformat(), "status": {"arms": {}}}  # fmt: skip
    audit.append(key=ADMIN, request_id="experiment:ab-1:conclusion", kind="experiment", payload=conclusion)
    return audit


# ----- the same figures, from the raw rows ----------------------------------------------------------


def raw_rows(path: Path) -> list[dict]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM audit_records ORDER BY seq")]
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows


def expected(path: Path, start: dt.date | None, end: dt.date | None, now: dt.datetime) -> dict:
    rows = raw_rows(path)
    inside = [r for r in rows if (start is None or r["created_at"][:10] >= start.isoformat())
              and (end is None or r["created_at"][:10] <= end.isoformat())]  # fmt: skip
    decided = {
        r["request_id"].removeprefix("decision:"): r["payload"]["decision"] for r in rows if r["kind"] == "approval"
    }
    recs = [r for r in inside if r["kind"] == "recommendation"]
    by_status = dict.fromkeys(("ok", "pending_approval", "approved", "rejected", "expired"), 0)
    checks: dict[str, dict] = {}
    experiments: dict[str, dict] = {}
    for r in recs:
        response = r["payload"]["response"]
        if r["request_id"] in decided:
            by_status[decided[r["request_id"]]] += 1
        elif response.get("status") == "pending_approval":
            expired = dt.datetime.fromisoformat(response["valid_until"]) < now
            by_status["expired" if expired else "pending_approval"] += 1
        else:
            by_status["ok"] += 1
        for c in response["checks"]:
            figures = checks.setdefault(c["name"], {"evaluated": 0, "changed": 0, "amounts": [], "amount_unknown": 0})
            figures["evaluated"] += 1
            figures["changed"] += c["changed"]
            if c["changed"] and "amount" in c:
                figures["amounts"].append(c["amount"])
            figures["amount_unknown"] += c["changed"] and "amount" not in c
        e = r["payload"].get("experiment")
        if e:
            arms = experiments.setdefault(e["name"], {"models": {e["model"]}, "arms": {}})["arms"]
            for name in ("control", "candidate"):
                arm = arms.setdefault(
                    name, {"assigned": 0, "served": 0, "fallbacks": 0, "errors": 0, "versions": set()}
                )
                arm["assigned"] += e["arm"] == name
                arm["served"] += e["served_arm"] == name
                arm["fallbacks"] += e["arm"] == name and e["served_arm"] != name
                arm["errors"] += e["arms"][name]["error"] is not None
                arm["versions"].add(e["arms"][name]["version"])
    decisions = {r["payload"]["recommendation_id"]: r["payload"] for r in inside if r["kind"] == "approval"}
    latencies = sorted(d["latency_s"] for d in decisions.values())
    middle = len(latencies) // 2
    conclusions = {r["payload"]["name"]: (r["seq"], r["payload"]) for r in inside if r["kind"] == "experiment"}
    seqs = [r["seq"] for r in rows]
    return {
        "kinds": Counter(r["kind"] for r in inside), "total": len(recs), "by_status": by_status,
        "by_key": Counter(r["key_id"] for r in recs),
        "by_as_of": Counter(r["payload"]["response"]["as_of"] for r in recs),
        "checks": checks, "experiments": experiments, "conclusions": conclusions, "decisions": decisions,
        "approved": sum(d["decision"] == "approved" for d in decisions.values()),
        "rejected": sum(d["decision"] == "rejected" for d in decisions.values()),
        "p50": None if not latencies else (latencies[middle] if len(latencies) % 2
                                           else (latencies[middle - 1] + latencies[middle]) / 2),
        "max": max(latencies, default=None), "last": (rows[-1]["seq"], rows[-1]["hash"]),
        "missing": sorted(set(range(1, max(seqs) + 1)) - set(seqs)),
    }  # fmt: skip


def assert_figures_match(report, want: dict) -> None:
    db, recs, appr = report.database, report.recommendations, report.approvals
    assert db.records_by_kind == dict(want["kinds"]) and db.records_in_window == sum(want["kinds"].values())
    assert (db.last_seq, db.last_hash) == want["last"]
    assert recs.total == want["total"] and recs.by_status == want["by_status"]
    assert recs.by_key == dict(want["by_key"]) and recs.by_as_of == dict(want["by_as_of"])
    assert set(report.checks) == set(want["checks"])
    for name, figures in report.checks.items():
        w = want["checks"][name]
        assert (figures.evaluated, figures.changed, figures.amount_unknown) == (
            w["evaluated"], w["changed"], w["amount_unknown"])  # fmt: skip
        assert figures.amount_total == pytest.approx(sum(w["amounts"]))
        mean = sum(w["amounts"]) / len(w["amounts"]) if w["amounts"] else None
        assert figures.amount_mean == (None if mean is None else pytest.approx(mean))
    assert (appr.approved, appr.rejected) == (want["approved"], want["rejected"])
    assert appr.latency_p50_s == want["p50"] and appr.latency_max_s == want["max"]
    assert {rid: d.model_dump() for rid, d in appr.decisions.items()} == {
        rid: {k: d[k] for k in ("decision", "reason", "by", "decided_at", "latency_s")}
        for rid, d in want["decisions"].items()}  # fmt: skip
    assert set(report.experiments) == set(want["experiments"]) | set(want["conclusions"])
    for name, figures in report.experiments.items():
        w = want["experiments"].get(name, {"models": set(), "arms": {}})
        seq, conclusion = want["conclusions"].get(name, (None, None))
        assert set(figures.models) == w["models"] | ({conclusion["model"]} if conclusion else set())
        for arm, a in w["arms"].items():
            got = figures.arms[arm]
            assert (got.assigned, got.served, got.fallbacks, got.errors, set(got.versions)) == (
                a["assigned"], a["served"], a["fallbacks"], a["errors"], a["versions"])  # fmt: skip
        if conclusion is None:
            assert figures.conclusion is None
        else:
            assert figures.conclusion.seq == seq and figures.conclusion.action == conclusion["action"]
            assert (figures.conclusion.by, figures.conclusion.decided_at) == (
                conclusion["by"],
                conclusion["decided_at"],
            )
    assert [m for g in report.gaps.missing for m in range(g.first, g.last + 1)] == want["missing"]


# ----- the tests ---------------------------------------------------------------------------------


@pytest.fixture
def log_path(tmp_path) -> Path:
    build_log(tmp_path / "audit.db")
    return tmp_path / "audit.db"


def test_report_figures_equal_the_raw_rows(log_path):
    now = dt.datetime.now(dt.UTC)
    report = compliance_report(open_audit(str(log_path)), None, None, now)
    want = expected(log_path, None, None, now)
    # The log exercises every figure: none of them may pass for being empty.
    assert all(n > 0 for n in want["by_status"].values()) and len(want["by_key"]) == 4
    assert want["checks"]["position_cap"]["amount_unknown"] == 1 and want["checks"]["turnover"]["changed"] == 0
    assert want["experiments"]["ab-1"]["arms"]["candidate"]["fallbacks"] == 2 and want["rejected"] == 1
    assert_figures_match(report, want)
    assert report.database.chain.ok and report.database.chain.records == len(raw_rows(log_path))
    assert report.database.url == sqlite_url(log_path) and report.generated_at == now
    assert report.gaps.missing == [] and report.gaps.breaks == []
    # Statuses as of another time: the pending one still valid in 2099 has expired in 2101.
    later = compliance_report(open_audit(str(log_path)), None, None, dt.datetime(2101, 1, 1, tzinfo=dt.UTC))
    assert later.recommendations.by_status["pending_approval"] == 0
    assert later.recommendations.by_status["expired"] == (
        report.recommendations.by_status["expired"] + report.recommendations.by_status["pending_approval"])  # fmt: skip


def test_a_tampered_row_breaks_the_chain_at_its_seq(log_path):
    with sqlite3.connect(log_path) as db:
        (payload,) = db.execute("SELECT payload FROM audit_records WHERE seq = 5").fetchone()
        db.execute("UPDATE audit_records SET payload = ? WHERE seq = 5", (payload.replace('"ok"', '"OK"', 1),))
    now = dt.datetime.now(dt.UTC)
    report = compliance_report(open_audit(str(log_path)), None, None, now)
    assert not report.database.chain.ok and report.database.chain.first_bad_seq == 5
    assert report.database.chain.records == 4 and "changed" in report.database.chain.reason
    assert_figures_match(report, expected(log_path, None, None, now))  # the figures are of what is there now
    assert "BROKEN at record 5" in to_markdown(report)


def test_deleted_rows_show_as_gaps_and_a_relinked_row_as_a_break(log_path):
    with sqlite3.connect(log_path) as db:
        db.execute("DELETE FROM audit_records WHERE seq IN (7, 8, 20)")
        db.execute("UPDATE audit_records SET prev_hash = ? WHERE seq = 12", ("f" * 64,))
    now = dt.datetime.now(dt.UTC)
    report = compliance_report(open_audit(str(log_path)), None, None, now)
    assert not report.database.chain.ok and report.database.chain.first_bad_seq == 7
    assert [g.model_dump() for g in report.gaps.missing] == [
        {"first": 7, "last": 8, "after_seq": 6, "before_seq": 9},
        {"first": 20, "last": 20, "after_seq": 19, "before_seq": 21},
    ]
    hashes = {r["seq"]: r["hash"] for r in raw_rows(log_path)}
    assert [b.model_dump() for b in report.gaps.breaks] == [
        {"seq": 12, "prev_hash": "f" * 64, "previous_hash": hashes[11]}
    ]
    assert_figures_match(report, expected(log_path, None, None, now))
    text = to_markdown(report)
    assert "Missing records" in text and "| 7 | 8 | 6 | 9 |" in text


def test_the_window_includes_both_end_days(log_path):
    # Records 1-8 on day 0, 9-16 on day 1, 17-24 on day 2, the rest on day 3; the first two of each
    # day at 00:00:00.000000, the last two (of days 0-2) at 23:59:59.999999, so each side of each
    # window end has records at the very edge, even with one of a pair deleted. (The chain breaks,
    # as it should: the window is about created_at, which is all this changes.)
    days = [dt.date(2024, 3, d) for d in (1, 2, 3, 4)]
    seqs = [r["seq"] for r in raw_rows(log_path)]
    with sqlite3.connect(log_path) as db:
        for seq in seqs:
            day, place = min((seq - 1) // 8, 3), (seq - 1) % 8 if seq <= 24 else seq - 25
            edge = {0: "00:00:00.000000", 1: "00:00:00.000000", 6: "23:59:59.999999", 7: "23:59:59.999999"}
            stamp = f"{days[day]}T{edge.get(place, '12:00:00.000000')}+00:00"
            db.execute("UPDATE audit_records SET created_at = ? WHERE seq = ?", (stamp, seq))
        db.execute("DELETE FROM audit_records WHERE seq IN (4, 8, 25, 30)")  # days 0 | 0-1 | 2-3 | 3
    now = dt.datetime.now(dt.UTC)
    report = compliance_report(open_audit(str(log_path)), days[1], days[2], now)
    want = expected(log_path, days[1], days[2], now)
    assert want["total"] == 16 and want["by_status"]["approved"] == 1  # rec-11, decided on day 3
    assert_figures_match(report, {**want, "missing": [8, 25]})  # the gaps the window's records border
    assert (report.database.window_start, report.database.window_end) == (days[1], days[2])
    assert report.approvals.decisions == {}  # all decided on day 3
    for day, missing in ((days[0], [4, 8]), (days[3], [25, 30])):
        alone = compliance_report(open_audit(str(log_path)), day, day, now)
        assert_figures_match(alone, {**expected(log_path, day, day, now), "missing": missing})
    everything = compliance_report(open_audit(str(log_path)), None, None, now)
    assert everything.database.records_in_window == len(seqs) - 4


def test_markdown_json_and_csv_render_the_same_figures(log_path):
    report = compliance_report(open_audit(str(log_path)), None, None)
    assert json.loads(to_json(report)) == report.model_dump(mode="json")
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert rows and all(set(r) == {"section", "key", "value"} for r in rows)
    cell = {(r["section"], r["key"]): r["value"] for r in rows}
    assert len(cell) == len(rows)  # one row per figure
    for status, count in report.recommendations.by_status.items():
        assert cell["recommendations", f"by_status.{status}"] == str(count)
    assert cell["database", "chain.ok"] == "true" and cell["database", "last_hash"] == report.database.last_hash
    assert cell["approvals", "decisions.rec-6.reason"] == "too concentrated | for this client"
    assert cell["experiments", "ab-1.arms.candidate.fallbacks"] == "2"
    assert cell["checks", "position_cap.changed"] == str(report.checks["position_cap"].changed)
    text = to_markdown(report)
    for heading in ("# Audit compliance report", "## Audit chain", "## Gaps", "## Recommendations", "## Risk checks",
                    "## Approvals", "## Experiments", "### ab-1"):  # fmt: skip
        assert f"\n{heading}" in f"\n{text}"
    assert "too concentrated \\| for this client" in text and "Concluded: promote" in text
    assert report.database.last_hash in text


def test_reading_never_creates_a_log(tmp_path):
    missing = tmp_path / "nope" / "audit.db"
    with pytest.raises(ComplianceError, match=r"audit\.db: no such file"):
        open_audit(str(missing))
    assert not missing.parent.exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ComplianceError, match="not an audit log"):
        open_audit(str(other))
    with sqlite3.connect(other) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["t"]
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ComplianceError, match="cannot be read"):
        open_audit(str(garbage))


def test_a_password_in_the_url_is_never_shown():
    with pytest.raises(ComplianceError) as raised:
        open_audit("postgresql+nosuchdriver://auditor:s3cret@db.example:5432/audit")
    assert "s3cret" not in str(raised.value) and "auditor:***@db.example" in str(raised.value)
