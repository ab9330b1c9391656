"""The compliance report of the audit log: what was recommended, decided and experimented on in a
window of days, and whether the record of it is whole.

One streamed pass over the log (a log of 10^5 records reports in seconds without being held in
memory; payloads outside the window are not even decoded), plus the chain check of the whole log
(``AuditLog.verify``, a read of its own: a record appended between the two is in the figures but
not in the check's count). Figures cover the records
whose ``created_at`` day (UTC) lies in the window, both ends included, with one exception: a
recommendation's status at ``now`` takes its decision into account wherever the decision lies in
the log (a recommendation made on the window's last day may be approved the next morning).

Sections: the database (its URL, password hidden; the whole chain's check; its last record), gaps
(missing sequence numbers, and records whose ``prev_hash`` is not their predecessor's hash),
recommendations by status / key id / as_of date, risk checks (how often each changed the weights,
and by how much), approvals and rejections (reasons, latency), experiments (per arm: assigned,
served, fallbacks) with their conclusions. Rendered as Markdown, JSON or a long-format CSV.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from typing import Literal, NamedTuple

import sqlalchemy as sa
from pydantic import BaseModel, Field

from rayfolio.serving.approvals import status_of
from rayfolio.serving.audit import GENESIS, RECORDS, AuditLog, AuditLogUnreadable, AuditRecord, open_existing

STATUSES = ("ok", "pending_approval", "approved", "rejected", "expired")
ARMS = ("control", "candidate")
PAGE = 1000  # rows fetched at a time


class ComplianceError(ValueError):
    """An audit log the report cannot read; one line naming it."""


# ----- the report ------------------------------------------------------------------------------


class ChainStatus(BaseModel):
    ok: bool
    records: int = Field(description="records verified before the first bad one (all of them when ok)")
    first_bad_seq: int | None = None
    reason: str = ""


class Database(BaseModel):
    url: str = Field(description="the audit database read, password hidden")
    chain: ChainStatus = Field(description="the hash chain of the whole log, not only the window")
    last_seq: int | None = Field(None, description="the last record's seq (the chain head); None: empty log")
    last_hash: str | None = None
    window_start: dt.date | None = Field(None, description="first created_at day (UTC) reported; None: open")
    window_end: dt.date | None = Field(None, description="last created_at day (UTC) reported; None: open")
    records_in_window: int = 0
    records_by_kind: dict[str, int] = Field(default_factory=dict)


class MissingRange(BaseModel):
    first: int
    last: int
    after_seq: int | None = Field(description="the record present before the missing ones (None: at the start)")
    before_seq: int = Field(description="the record present after them")


class Break(BaseModel):
    seq: int = Field(description="a record whose prev_hash is not the hash of the record before it")
    prev_hash: str
    previous_hash: str = Field(description="the hash of record seq - 1 (the genesis hash for record 1)")


class Gaps(BaseModel):
    missing: list[MissingRange] = Field(default_factory=list)
    breaks: list[Break] = Field(default_factory=list)


class Recommendations(BaseModel):
    total: int = 0
    by_status: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(STATUSES, 0),
                                      description="where each stands at the report's time")  # fmt: skip
    by_key: dict[str, int] = Field(default_factory=dict, description="API key id (a hash of the key) -> count")
    by_as_of: dict[str, int] = Field(default_factory=dict, description="as_of date -> count")


class CheckFigures(BaseModel):
    evaluated: int = 0
    changed: int = 0
    amount_total: float = Field(0.0, description="sum of |weight change| over the changes with a known amount")
    amount_mean: float | None = Field(None, description="per change with a known amount")
    amount_unknown: int = Field(0, description="changes recorded before checks carried an amount")


class DecisionFigures(BaseModel):
    decision: Literal["approved", "rejected"]
    reason: str
    by: str
    decided_at: str
    latency_s: float


class Approvals(BaseModel):
    approved: int = 0
    rejected: int = 0
    latency_p50_s: float | None = None
    latency_max_s: float | None = None
    decisions: dict[str, DecisionFigures] = Field(default_factory=dict, description="by recommendation id")


class ArmFigures(BaseModel):
    assigned: int = Field(0, description="recommendations whose client this arm was assigned")
    served: int = Field(0, description="recommendations this arm's answer was served for")
    fallbacks: int = Field(0, description="assigned here, served by the other arm (this arm failed)")
    errors: int = Field(0, description="recommendations this arm failed to compute")
    versions: list[str] = Field(default_factory=list)


class Conclusion(BaseModel):
    seq: int
    action: Literal["promote", "stop"]
    by: str
    decided_at: str
    model: str
    control: str
    candidate: str


class ExperimentFigures(BaseModel):
    models: list[str] = Field(default_factory=list)
    arms: dict[str, ArmFigures] = Field(default_factory=lambda: {arm: ArmFigures() for arm in ARMS})
    conclusion: Conclusion | None = None


class ComplianceReport(BaseModel):
    generated_at: dt.datetime = Field(description="the report's time: statuses are as of then")
    database: Database
    gaps: Gaps
    recommendations: Recommendations
    checks: dict[str, CheckFigures] = Field(description="per risk check, over the recommendations in the window")
    approvals: Approvals
    experiments: dict[str, ExperimentFigures] = Field(description="by experiment name")


# ----- reading the log -------------------------------------------------------------------------


def open_audit(text: str) -> AuditLog:
    """The audit log at ``text`` (a SQLAlchemy URL, or a SQLite file), read only (``open_existing``)."""
    try:
        return open_existing(text)
    except AuditLogUnreadable as err:
        raise ComplianceError(str(err)) from None


class _Link(NamedTuple):
    """What the chain's gaps and breaks are judged on: one record's place, without its payload."""

    seq: int
    hash: str
    prev_hash: str
    day: dt.date  # created_at's day, UTC


def _stream(audit: AuditLog) -> Iterator[sa.Row]:
    """Every record's row in seq order, streamed by one query, PAGE rows fetched at a time: pages
    by OFFSET would re-read the log's head for every page (quadratic on a big log)."""
    query = sa.select(RECORDS).order_by(RECORDS.c.seq)
    with audit.engine.connect() as c:
        yield from c.execution_options(yield_per=PAGE).execute(query)


def _record(row: sa.Row) -> AuditRecord:
    return AuditRecord(row.seq, row.created_at, row.key_id, row.request_id, row.kind, json.loads(row.payload),
                       row.prev_hash, row.hash)  # fmt: skip


def _within(day: dt.date, start: dt.date | None, end: dt.date | None) -> bool:
    return (start is None or start <= day) and (end is None or day <= end)


def compliance_report(
    audit: AuditLog, start: dt.date | None, end: dt.date | None, now: dt.datetime | None = None
) -> ComplianceReport:
    """The report of ``audit``'s records created from ``start`` to ``end`` (UTC days, both included;
    None: open), statuses as of ``now`` (default: the current time)."""
    now = now or dt.datetime.now(dt.UTC)
    check = audit.verify()
    database = Database(url=audit.engine.url.render_as_string(hide_password=True),
                        chain=ChainStatus(ok=check.ok, records=check.records, first_bad_seq=check.first_bad_seq,
                                          reason=check.reason),
                        window_start=start, window_end=end)  # fmt: skip
    gaps, recs, approvals = Gaps(), Recommendations(), Approvals()
    checks: dict[str, CheckFigures] = {}
    experiments: dict[str, ExperimentFigures] = {}
    kinds: Counter[str] = Counter()
    pending: dict[str, AuditRecord] = {}  # in-window recommendations whose status needs their decision
    decisions: dict[str, AuditRecord] = {}  # decisions on those, made by ``now``
    previous: _Link | None = None
    for row in _stream(audit):
        created = dt.datetime.fromisoformat(row.created_at)
        link = _Link(row.seq, row.hash, row.prev_hash, created.astimezone(dt.UTC).date())
        inside = _within(link.day, start, end)
        _chain_gaps(gaps, previous, link, inside, start, end)
        previous = link
        if not inside and row.kind != "approval":
            continue  # its payload is never read: a narrow window of a big log reports fast
        record = _record(row)
        if record.kind == "approval":
            target = record.payload.get("recommendation_id")
            if target in pending and created <= now:
                decisions[target] = record
        if not inside:
            continue
        kinds[record.kind] += 1
        if record.kind == "recommendation":
            _recommendation(record, recs, checks, experiments, pending)
        elif record.kind == "approval":
            _decision(record, approvals)
        elif record.kind == "experiment":
            _conclusion(record, experiments)
    for request_id, record in pending.items():
        recs.by_status[status_of(record, decisions.get(request_id), now)["status"]] += 1
    latencies = [d.latency_s for d in approvals.decisions.values()]
    if latencies:
        approvals.latency_p50_s, approvals.latency_max_s = statistics.median(latencies), max(latencies)
    for figures in checks.values():
        known = figures.changed - figures.amount_unknown
        figures.amount_mean = figures.amount_total / known if known else None
    if previous is not None:
        database.last_seq, database.last_hash = previous.seq, previous.hash
    database.records_in_window, database.records_by_kind = sum(kinds.values()), dict(sorted(kinds.items()))
    recs.by_key, recs.by_as_of = dict(sorted(recs.by_key.items())), dict(sorted(recs.by_as_of.items()))
    return ComplianceReport(generated_at=now, database=database, gaps=gaps, recommendations=recs,
                            checks=dict(sorted(checks.items())), approvals=approvals,
                            experiments=dict(sorted(experiments.items())))  # fmt: skip


def _chain_gaps(gaps: Gaps, previous: _Link | None, link: _Link, inside: bool,
                start: dt.date | None, end: dt.date | None) -> None:  # fmt: skip
    """Missing seqs before ``link`` (reported when the span they were written in, between the
    records either side, meets the window) and a broken link into it (when it is in the window).
    After missing records the link cannot be judged: the gap is the finding."""
    last = 0 if previous is None else previous.seq
    if link.seq > last + 1:
        if (previous is None or _within(previous.day, None, end)) and _within(link.day, start, None):
            after = None if previous is None else previous.seq
            gaps.missing.append(MissingRange(first=last + 1, last=link.seq - 1, after_seq=after,
                                             before_seq=link.seq))  # fmt: skip
        return
    expected = GENESIS if previous is None else previous.hash
    if inside and link.prev_hash != expected:
        gaps.breaks.append(Break(seq=link.seq, prev_hash=link.prev_hash, previous_hash=expected))


def _recommendation(record: AuditRecord, recs: Recommendations, checks: dict[str, CheckFigures],
                    experiments: dict[str, ExperimentFigures], pending: dict[str, AuditRecord]) -> None:  # fmt: skip
    response = record.payload["response"]
    recs.total += 1
    recs.by_key[record.key_id] = recs.by_key.get(record.key_id, 0) + 1
    recs.by_as_of[response["as_of"]] = recs.by_as_of.get(response["as_of"], 0) + 1
    if response.get("status", "ok") == "pending_approval":
        # Approved, rejected, expired or still pending: known at the end. Kept without the rest of the
        # payload: thousands of whole payloads held would make every garbage collection slow.
        slim = {k: response[k] for k in ("status", "valid_until") if k in response}
        pending[record.request_id] = dataclasses.replace(record, payload={"response": slim})
    else:
        recs.by_status["ok"] += 1
    for check in response.get("checks", []):
        if check["name"] not in checks:
            checks[check["name"]] = CheckFigures()
        figures = checks[check["name"]]
        figures.evaluated += 1
        if check["changed"]:
            figures.changed += 1
            if "amount" in check:
                figures.amount_total += float(check["amount"])
            else:
                figures.amount_unknown += 1
    experiment = record.payload.get("experiment")
    if experiment is not None:
        figures = _experiment(experiments, experiment["name"])
        if experiment["model"] not in figures.models:
            figures.models = sorted([*figures.models, experiment["model"]])
        assigned, served = figures.arms[experiment["arm"]], experiment["served_arm"]
        assigned.assigned += 1
        figures.arms[served].served += 1
        assigned.fallbacks += served != experiment["arm"]
        for arm, outcome in experiment["arms"].items():
            figures.arms[arm].errors += outcome.get("error") is not None
            if outcome["version"] not in figures.arms[arm].versions:
                figures.arms[arm].versions = sorted([*figures.arms[arm].versions, outcome["version"]])


def _experiment(experiments: dict[str, ExperimentFigures], name: str) -> ExperimentFigures:
    if name not in experiments:  # (setdefault would build a throw-away model per record)
        experiments[name] = ExperimentFigures()
    return experiments[name]


def _decision(record: AuditRecord, approvals: Approvals) -> None:
    p = record.payload
    decision = DecisionFigures(decision=p["decision"], reason=p["reason"], by=p["by"], decided_at=p["decided_at"],
                               latency_s=p["latency_s"])  # fmt: skip
    approvals.decisions[p["recommendation_id"]] = decision
    if decision.decision == "approved":
        approvals.approved += 1
    else:
        approvals.rejected += 1


def _conclusion(record: AuditRecord, experiments: dict[str, ExperimentFigures]) -> None:
    p = record.payload
    figures = _experiment(experiments, p["name"])
    figures.conclusion = Conclusion(seq=record.seq, action=p["action"], by=p["by"], decided_at=p["decided_at"],
                                    model=p["model"], control=p["control"], candidate=p["candidate"])  # fmt: skip
    if p["model"] not in figures.models:
        figures.models = sorted([*figures.models, p["model"]])
