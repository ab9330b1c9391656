"""Human approval of large recommendations.

A recommendation over a house approval threshold (``HouseLimits.approval_turnover`` or
``approval_position_change``) is recorded ``pending_approval`` and is not executable. An admin
approves or rejects it, with a reason, before its ``valid_until``; after that it has expired.

Every decision is an audit record (kind "approval") chained like the recommendations, under the
request id ``decision:<recommendation id>``: the audit log's unique request ids make "at most one
decision per recommendation" hold across replicas and processes, so two admins deciding at once
get one decision recorded and the other a 409.
"""

from __future__ import annotations

import datetime as dt

from rayfolio.serving.audit import AuditLog, AuditRecord
from rayfolio.serving.errors import RequestError

DECISIONS = ("approved", "rejected")


def decision_id(recommendation_id: str) -> str:
    return f"decision:{recommendation_id}"


def _recommendation(audit: AuditLog, recommendation_id: str) -> AuditRecord:
    record = audit.get(recommendation_id)
    if record is None or record.kind != "recommendation":
        raise RequestError("not_found", f"no recommendation {recommendation_id!r}", 404)
    return record


def _valid_until(record: AuditRecord) -> dt.datetime | None:
    text = record.payload["response"].get("valid_until")
    return None if text is None else dt.datetime.fromisoformat(text)


def status_of(record: AuditRecord, decision: AuditRecord | None, now: dt.datetime) -> dict:
    """Where a recommendation stands at ``now``: ok | pending_approval | approved | rejected | expired,
    and whether it may be executed (ok or approved, and still valid)."""
    response = record.payload["response"]
    until = _valid_until(record)
    valid = until is None or now <= until
    status = response.get("status", "ok")
    if decision is not None:
        status = decision.payload["decision"]
    elif status == "pending_approval" and not valid:
        status = "expired"
    out = {
        "request_id": record.request_id,
        "status": status,
        "executable": status in ("ok", "approved") and valid,
        "valid_until": None if until is None else until.isoformat(),
        "approval_reasons": response.get("approval_reasons", []),
        "created_at": record.created_at,
        "key_id": record.key_id,
        "decision": None if decision is None else decision.payload,
        "recommendation": response,
    }
    return out


def recommendation_status(audit: AuditLog, recommendation_id: str, now: dt.datetime | None = None) -> dict:
    record = _recommendation(audit, recommendation_id)
    return status_of(record, audit.get(decision_id(recommendation_id)), now or dt.datetime.now(dt.UTC))


def decide(
    audit: AuditLog,
    recommendation_id: str,
    decision: str,
    reason: str,
    by: str,
    now: dt.datetime | None = None,
) -> dict:
    """Record an admin's ``decision`` ("approved" | "rejected") on a pending recommendation; returns
    its new status. Refused (409) unless it is pending, unexpired and not decided yet."""
    if decision not in DECISIONS:
        raise RequestError("invalid_request", f"decision must be one of {list(DECISIONS)}")
    now = now or dt.datetime.now(dt.UTC)
    record = _recommendation(audit, recommendation_id)
    response = record.payload["response"]
    if response.get("status", "ok") != "pending_approval":
        raise RequestError("not_pending", f"recommendation {recommendation_id!r} did not need approval", 409)
    existing = audit.get(decision_id(recommendation_id))
    if existing is not None:
        raise RequestError(
            "already_decided", f"recommendation {recommendation_id!r} was already {existing.payload['decision']}", 409
        )
    until = _valid_until(record)
    if until is not None and now > until:
        raise RequestError("expired", f"recommendation {recommendation_id!r} expired at {until.isoformat()}", 409)
    created = dt.datetime.fromisoformat(record.created_at)
    payload = {
        "recommendation_id": recommendation_id,
        "decision": decision,
        "reason": reason,
        "by": by,
        "decided_at": now.isoformat(timespec="microseconds"),
        "latency_s": round((now - created).total_seconds(), 6),
    }
    written = audit.append(key=by, request_id=decision_id(recommendation_id), kind="approval", payload=payload)
    if written.payload is not payload:  # another admin's decision committed first
        raise RequestError(
            "already_decided", f"recommendation {recommendation_id!r} was already {written.payload['decision']}", 409
        )
    return status_of(record, written, now) | {"seq": written.seq}
