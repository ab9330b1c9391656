"""Approval of large recommendations: the house rules, expiry, one decision per recommendation
(also when two admins race), every transition in the hash chain."""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pytest

from rayfolio.serving import approvals
from rayfolio.serving.errors import RequestError
from rayfolio.serving.pipeline import business_days_after
from rayfolio.serving.risk import HouseLimits, approval_reasons
from rayfolio.serving.schemas import RecommendationRequest
from tests.serving.conftest import make_engine


@pytest.fixture
def engine(panel, tmp_path):
    return make_engine(panel, tmp_path / "audit.db", HouseLimits(approval_turnover=0.5, approval_position_change=0.2))


def test_the_rules_name_what_crossed_them():
    symbols = ("A", "B", "C")
    limits = HouseLimits(approval_turnover=0.5, approval_position_change=0.2)
    assert approval_reasons(np.array([0.1, -0.1, 0.05, -0.05]), symbols, limits) == []
    reasons = approval_reasons(np.array([0.3, -0.25, 0.0, -0.05]), symbols, limits)
    assert reasons == ["turnover 0.550 above 0.500", "A changes by 0.300, above 0.200"]
    none = HouseLimits(approval_turnover=None, approval_position_change=None)
    assert approval_reasons(np.array([0.9, 0.0, 0.0, -0.9]), symbols, none) == []  # no rule: none


def test_valid_for_counts_business_days():
    friday = dt.datetime(2026, 12, 4, 15, 30, tzinfo=dt.UTC)
    assert business_days_after(friday, 1) == dt.datetime(2026, 12, 7, 15, 30, tzinfo=dt.UTC)  # Monday
    assert business_days_after(friday, 3) == dt.datetime(2026, 12, 9, 15, 30, tzinfo=dt.UTC)
    saturday = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    assert business_days_after(saturday, 1) == dt.datetime(2026, 12, 8, 9, 0, tzinfo=dt.UTC)  # Mon + 1


def pending(engine) -> str:
    symbol = engine.symbols[0]
    out = engine.recommend(RecommendationRequest(portfolio={symbol: 1.0}), "client")
    assert out.status == "pending_approval" and not out.executable and out.approval_reasons
    assert out.valid_until > dt.datetime.now(dt.UTC)
    return out.request_id


def test_approve_reject_and_expiry_each_leave_a_verified_record(engine):
    audit = engine.audit
    first, second, third = pending(engine), pending(engine), pending(engine)
    approved = approvals.decide(audit, first, "approved", "client confirmed", "admin-1")
    assert approved["status"] == "approved" and approved["executable"]
    rejected = approvals.decide(audit, second, "rejected", "too concentrated", "admin-2")
    assert rejected["status"] == "rejected" and not rejected["executable"]
    with pytest.raises(RequestError) as err:
        approvals.decide(audit, first, "rejected", "changed my mind", "admin-2")
    assert err.value.status == 409 and err.value.code == "already_decided"
    # After valid_until: expired, and an approval is refused (409).
    until = dt.datetime.fromisoformat(audit.get(third).payload["response"]["valid_until"])
    later = until + dt.timedelta(seconds=1)
    assert approvals.recommendation_status(audit, third, now=later)["status"] == "expired"
    with pytest.raises(RequestError) as err:
        approvals.decide(audit, third, "approved", "late", "admin-1", now=later)
    assert err.value.status == 409 and err.value.code == "expired"
    assert approvals.recommendation_status(audit, third, now=until)["status"] == "pending_approval"
    records = audit.records(limit=100)
    assert [r.kind for r in records] == ["recommendation"] * 3 + ["approval"] * 2
    decision = records[3].payload
    assert decision["recommendation_id"] == first and decision["by"] == "admin-1" and decision["latency_s"] >= 0
    assert audit.verify().ok


def test_two_admins_deciding_at_once_record_one_decision(engine):
    rid = pending(engine)
    outcomes: list = []

    def decide(decision: str) -> None:
        try:
            outcomes.append(approvals.decide(engine.audit, rid, decision, "race", decision)["status"])
        except RequestError as err:
            outcomes.append(err.code)

    threads = [threading.Thread(target=decide, args=(d,)) for d in ("approved", "rejected") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("already_decided") == 7
    assert [r.kind for r in engine.audit.records()].count("approval") == 1 and engine.audit.verify().ok
