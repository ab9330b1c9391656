"""Experiment status: per-date paired differences from real audit records and a tiny store, the
HAC t and the mSPRT against independent computations, the decision rule, its false-promotion rate
and power over simulated experiments, and the one conclusion.

Simulated experiments (``simulate``): 500 seeds, up to 250 daily looks from min_dates (20) on, the
experiment ending at its first promote or stop. Each arm's daily return is a shared market return
(1%/day vol) plus its own tracking noise; the two arms' difference has 0.2%/day vol (correlation
~0.98: a new version of the same model). Measured with seeds 0, 1, 2 of the generator:
- A/A (no edge): promoted in 1.6%, 2.2%, 3.2% of seeds (and stopped in 1.4%, 1.8%, 1.2%). Peeking
  daily with a plain t-test (p <= 0.05 and mean > 0) instead promotes 16.4% (seed 0).
- +5 bp/day edge: promoted within 250 dates in 87.2%, 87.8%, 90.0% of seeds at 0.2%/day tracking
  error; 47.4%, 51.6%, 50.0% at 0.3%/day; 18.0%, 17.6%, 20.4% at 0.5%/day. A 5 bp/day edge is
  found within a year only when the two versions track each other closely: with 0.5%/day between
  them, a year of daily looks finds it about once in five.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import statsmodels.api as sm

from rayfolio.data.store import STORE_FORMAT, FeatureStore, sha256_file
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.experiment_status import (
    BURN_IN,
    TAU_RATIO,
    DecisionRule,
    ExperimentConcluded,
    ExperimentNotFound,
    ExperimentNotReady,
    compare,
    conclude_experiment,
    decide,
    experiment_status,
    msprt_p_values,
)
from rayfolio.serving.experiments import conclusion_id
from rayfolio.serving.schemas import ExperimentArm, PortfolioRisk, RecommendationRequest, RecommendationResponse
from rayfolio.training.panel import Panel

# ----- helpers the CLI tests share --------------------------------------------------------------


def write_store(path: Path, closes: pd.DataFrame) -> FeatureStore:
    """A feature store holding ``ret_1`` (the log return from the previous close) of ``closes``,
    (dates, symbols): all a status reads."""
    ret_1 = np.log(closes).diff()
    frame = ret_1.stack(future_stack=True).rename("ret_1").rename_axis(["date", "symbol"]).reset_index()
    frame["date"] = frame["date"].dt.date
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path / "part-0.parquet")
    manifest = {"format": STORE_FORMAT, "features": [{"name": "ret_1"}], "labels": [],
                "files": {"part-0.parquet": sha256_file(path / "part-0.parquet")}}  # fmt: skip
    (path / "manifest.json").write_text(json.dumps(manifest))
    return FeatureStore(path)


def record(request_id: str, as_of: dt.date, current: dict, control: dict | None, candidate: dict | None,
           assigned: str, served: str | None = None, latency: tuple[float, float] = (1.0, 1.0), name: str = "canary",
           versions: tuple[str, str] = ("v0001", "v0002"), model: str = "ppo-allocator") -> tuple:  # fmt: skip
    """An audit entry (key, request_id, kind, payload) as the pipeline writes it; an arm given as
    None failed."""
    served = served or assigned
    weights = {"control": control, "candidate": candidate}
    request = RecommendationRequest.model_validate({"portfolio": current})
    response = RecommendationResponse(
        request_id=request_id, as_of=as_of, target_weights=weights[served], trades={}, expected_returns={},
        confidence={}, portfolio_risk=PortfolioRisk(volatility=0.1, var_95=0.01, cvar_95=0.02), checks=[],
        model_versions={model: versions[served == "candidate"]},
        experiment=ExperimentArm(name=name, arm=assigned, fallback=served != assigned),
    )  # fmt: skip
    arms = {arm: {"version": version, "target_weights": weights[arm], "latency_ms": ms,
                  "error": None if weights[arm] is not None else "RuntimeError: boom"}
            for arm, version, ms in zip(("control", "candidate"), versions, latency, strict=True)}  # fmt: skip
    payload = {"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json"),
               "experiment": {"name": name, "model": model, "arm": assigned, "served_arm": served,
                              "arms": arms}}  # fmt: skip
    return ("key-a", request_id, "recommendation", payload)


# ----- a hand-computed example -----------------------------------------------------------------

DATES = pd.bdate_range("2024-01-02", periods=4)  # D0..D3
CLOSES = pd.DataFrame({"A": [100.0, 102.0, 99.96, 101.0], "B": [50.0, 50.5, 50.0, 51.0]}, index=DATES)
D0, D1, D2, D3 = (d.date() for d in DATES)


@pytest.fixture
def example(tmp_path) -> tuple[AuditLog, FeatureStore]:
    """Next-day returns: D0 A +2%, B +1%; D1 A -2%, B -0.990%; D2 A +1.040%, B +2%; D3 not yet."""
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"))
    plain = record("plain", D1, {}, {"A": 1.0}, None, "control")
    del plain[3]["experiment"]  # served without an experiment
    entries = [
        record("old", D0, {}, {"A": 1.0}, {"B": 1.0}, "control", versions=("v0001", "v0003")),  # earlier versions
        # D0: d = (0.5 * 1% - 10 bp * 0.5) - (0.5 * 2% - 10 bp * 0.5) = -0.005
        record("r1", D0, {}, {"A": 0.5, "CASH": 0.5}, {"B": 0.5, "CASH": 0.5}, "control", latency=(1, 3)),
        # D0: d = (0.25 * 2% + 0.25 * 1% - 10 bp * 0.5) - 0.5 * 2% = -0.003
        record("r2", D0, {"A": 0.5}, {"A": 0.5, "CASH": 0.5}, {"A": 0.25, "B": 0.25, "CASH": 0.5}, "candidate",
               latency=(2, 4)),
        # D1: d = 0 - (-2% - 10 bp) = 0.021
        record("r3", D1, {}, {"A": 1.0, "CASH": 0.0}, {"CASH": 1.0}, "candidate", latency=(5, 6)),
        record("r4", D1, {}, {"A": 1.0}, None, "candidate", served="control", latency=(3, 8)),  # candidate failed
        record("r5", D3, {}, {"A": 0.5}, {"B": 0.5}, "control", latency=(4, 5)),  # pending: no D4 yet
        # D2: both sell the 0.2 of B into cash, at the same cost: d = 0
        record("r6", D2, {"B": 0.2}, {"CASH": 1.0}, {"CASH": 1.0}, "control", latency=(6, 7)),
        record("x1", D1, {}, {"A": 1.0}, {"B": 1.0}, "candidate", name="other"),
        plain,
    ]  # fmt: skip
    audit.append_many(entries)
    return audit, write_store(tmp_path / "store", CLOSES)


def test_per_date_differences_of_an_example_computed_by_hand(example):
    audit, store = example
    status = experiment_status(audit, "canary", store, cost_bps=10.0)
    assert (status.model, status.control, status.candidate) == ("ppo-allocator", "v0001", "v0002")
    assert status.records == 6 and status.other_versions == 1 and (status.first_as_of, status.last_as_of) == (D0, D3)
    c = status.comparison
    assert [(d.date, d.requests) for d in c.by_date] == [(D0, 2), (D1, 1), (D2, 1)]
    np.testing.assert_allclose([d.difference for d in c.by_date], [-0.004, 0.021, 0.0], rtol=0, atol=1e-12)
    assert (c.dates, c.scored, c.pending, c.failed) == (3, 4, 1, 1)
    assert c.mean_difference == pytest.approx(0.017 / 3, abs=1e-12)
    control, candidate = status.arms["control"], status.arms["candidate"]
    assert (control.requests, control.served, control.errors) == (3, 4, 0)
    assert (candidate.requests, candidate.served, candidate.errors) == (3, 2, 1)
    assert candidate.error_rate == pytest.approx(1 / 6) and control.error_rate == 0
    # Latencies 1..6 and 3..8: medians 3.5 and 5.5, p99 (linear) the 5th value + 0.95 of the last gap.
    assert (control.latency_p50_ms, control.latency_p99_ms) == pytest.approx((3.5, 5.95))
    assert (candidate.latency_p50_ms, candidate.latency_p99_ms) == pytest.approx((5.5, 7.95))
    assert status.decision == "continue" and status.reasons == ["3 realised dates, 20 needed"]
    assert status.conclusion is None
    json.dumps(status.model_dump(mode="json"), allow_nan=False)  # what the HTTP route returns


def test_a_loaded_panel_gives_the_status_the_store_gives(example):
    audit, store = example
    panel = Panel.from_frame(store.to_pandas(), ("ret_1",), ())
    assert experiment_status(audit, "canary", panel) == experiment_status(audit, "canary", store)


def test_costs_enter_through_the_turnover_from_the_current_portfolio(example):
    audit, store = example
    free = experiment_status(audit, "canary", store, cost_bps=0.0).comparison.by_date
    # Without costs: r1's arms traded as much (unchanged), r2's candidate traded 0.5 and its control
    # nothing (-0.003 -> -0.0025), r3's control bought 1.0 (0.021 -> 0.02), r6's arms as much.
    np.testing.assert_allclose([d.difference for d in free], [-0.00375, 0.02, 0.0], rtol=0, atol=1e-12)


def test_an_experiment_no_record_names_is_refused(example):
    audit, store = example
    with pytest.raises(ExperimentNotFound, match="experiment 'nope': no recommendation in the audit log names it"):
        experiment_status(audit, "nope", store)


# ----- the statistics against independent computations ---------------------------------------


def test_the_hac_t_and_mean_are_statsmodels_newey_west_of_the_per_date_means():
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2023-01-02", periods=60)
    rows = [(f"r{i}", dates[i % 60], rng.normal(1e-3, 1e-2)) for i in range(200)]  # 3-4 requests a date
    requests = pd.DataFrame({"as_of": [d for _, d, _ in rows], "control": 0.0, "difference": [x for *_, x in rows],
                             "failed": False}, index=[r for r, *_ in rows])  # fmt: skip
    requests["candidate"] = requests["difference"]
    c = compare(requests, cost_bps=10.0)
    by_date: dict = {}
    for _, date, x in rows:
        by_date.setdefault(date, []).append(x)
    y = np.array([np.mean(by_date[d]) for d in sorted(by_date)])
    lag = math.floor(4 * (len(y) / 100) ** (2 / 9))
    fit = sm.OLS(y, np.ones(len(y))).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": True})
    assert c.dates == 60 and c.hac_lag == lag == 3
    assert c.mean_difference == pytest.approx(y.mean(), abs=1e-15)
    assert c.hac_t == pytest.approx(float(fit.tvalues[0]), rel=1e-9)
    assert c.tau == pytest.approx(TAU_RATIO * y.std(ddof=1), rel=1e-12)
    assert c.p_value == pytest.approx(min(1.0, *(msprt_one_by_one(y)[BURN_IN - 1 :])), rel=1e-9)


def msprt_one_by_one(x: np.ndarray) -> list[float]:
    """1 / Lambda_n of each prefix, the formula written out with scalars."""
    out = []
    for n in range(1, len(x) + 1):
        prefix = x[:n]
        if n < 2:
            out.append(1.0)
            continue
        xbar, s2 = float(np.mean(prefix)), float(np.var(prefix, ddof=1))
        tau2 = (TAU_RATIO**2) * s2
        lam = math.sqrt(s2 / (s2 + n * tau2)) * math.exp(n * n * tau2 * xbar**2 / (2 * s2 * (s2 + n * tau2)))
        out.append(min(1.0, 1 / lam))
    return out


def test_msprt_p_values_are_the_running_minimum_of_the_formula_after_the_burn_in():
    x = np.random.default_rng(5).normal(2e-4, 2e-3, 80)
    expected = np.minimum.accumulate([1.0] * (BURN_IN - 1) + msprt_one_by_one(x)[BURN_IN - 1 :])
    np.testing.assert_allclose(msprt_p_values(x), expected, rtol=1e-9)
    np.testing.assert_allclose(msprt_p_values(np.stack([x, -x]))[1], expected, rtol=1e-9)  # vectorised, sign-free
    assert (msprt_p_values(np.zeros(30)) == 1).all()  # identical arms: no evidence
    assert msprt_p_values(np.full(30, 1e-4))[-1] == 0  # a constant edge: certain


# ----- the decision rule -----------------------------------------------------------------------

RULE = DecisionRule()
CLEAN = {"control": 0.0, "candidate": 0.0}


@pytest.mark.parametrize(
    ("n", "mean", "p", "errors", "requests", "decision", "reason"),
    [(19, 0.001, 0.001, CLEAN, 500, "continue", "19 realised dates, 20 needed"),
     (20, 0.001, 0.001, CLEAN, 500, "promote", "the candidate earns more than the control (always-valid p 0.001"),
     (20, -0.001, 0.001, CLEAN, 500, "stop", "the candidate earns less than the control (always-valid p 0.001"),
     (100, 0.001, 0.2, CLEAN, 500, "continue", "no evidence either way yet (always-valid p 0.2 > 0.05)"),
     (20, 0.001, 0.05, {"control": 0.0, "candidate": 0.02}, 500, "continue", "but the candidate failed on 2.0%"),
     (20, 0.001, 0.05, {"control": 0.01, "candidate": 0.02}, 500, "promote", "earns more"),
     (3, None, 1.0, {"control": 0.0, "candidate": 0.06}, 100, "stop", "failed on 6.0% of requests, the control on "
      "0.0%: more than 5% points worse"),
     (3, None, 1.0, {"control": 0.0, "candidate": 0.5}, 99, "continue", "3 realised dates")],
)  # fmt: skip
def test_the_decision_rule(n, mean, p, errors, requests, decision, reason):
    verdict = decide(n, mean, p, errors, requests, RULE)
    assert verdict.decision == decision and reason in verdict.reasons[0]


# ----- false promotions and power over simulated experiments ---------------------------------

SEEDS, LOOKS = 500, 250


def simulate(edge: float, tracking: float, seed: int) -> np.ndarray:
    """(SEEDS, LOOKS) per-date differences candidate - control: both arms ride one market (1%/day)
    with their own tracking noise, the difference's vol ``tracking``; the candidate earns ``edge``."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, 0.01, (SEEDS, LOOKS))
    control = market + rng.normal(0.0, tracking / math.sqrt(2), (SEEDS, LOOKS))
    candidate = market + edge + rng.normal(0.0, tracking / math.sqrt(2), (SEEDS, LOOKS))
    return candidate - control


def first_conclusions(differences: np.ndarray) -> np.ndarray:
    """Each seed's first decision other than continue, looking after every date (or "continue")."""
    p = msprt_p_values(differences)
    means = np.cumsum(differences, axis=-1) / np.arange(1, differences.shape[-1] + 1)
    out = []
    for seed in range(len(differences)):
        for t in range(RULE.min_dates - 1, differences.shape[-1]):
            verdict = decide(t + 1, float(means[seed, t]), float(p[seed, t]), CLEAN, t + 1, RULE).decision
            if verdict != "continue":
                out.append(verdict)
                break
        else:
            out.append("continue")
    return np.array(out)


def test_an_a_a_experiment_looked_at_daily_promotes_at_most_5_percent_of_seeds():
    conclusions = first_conclusions(simulate(0.0, 0.002, seed=0))
    assert (conclusions == "promote").mean() <= 0.05
    assert (conclusions != "continue").mean() <= 0.05  # stops too: the p-value stays valid under daily looks


def test_a_5_bp_daily_edge_at_1_percent_vol_is_promoted_within_250_dates_in_80_percent_of_seeds():
    conclusions = first_conclusions(simulate(5e-4, 0.002, seed=0))
    assert (conclusions == "promote").mean() >= 0.80
    assert (conclusions == "stop").mean() == 0


# ----- the conclusion --------------------------------------------------------------------------


def test_promote_is_refused_unless_decided_a_stop_is_recorded_once_and_is_final(example):
    audit, store = example
    status = experiment_status(audit, "canary", store)
    with pytest.raises(ExperimentNotReady, match=r"the decision is continue, not promote \(3 realised dates") as no:
        conclude_experiment(audit, None, "canary", "promote", "admin-key", status)
    assert no.value.code == "experiment_not_ready" and audit.get(conclusion_id("canary")) is None
    written = conclude_experiment(audit, None, "canary", "stop", "admin-key", status)
    assert (written.kind, written.request_id, written.key_id) == ("experiment", "experiment:canary:conclusion",
                                                                  "admin-key")  # fmt: skip
    payload = written.payload
    assert {k: payload[k] for k in ("name", "model", "control", "candidate", "action", "by")} == {
        "name": "canary", "model": "ppo-allocator", "control": "v0001", "candidate": "v0002", "action": "stop",
        "by": "admin-key"}  # fmt: skip
    assert payload["status"] == status.model_dump(mode="json")
    assert dt.datetime.fromisoformat(payload["decided_at"]).tzinfo == dt.UTC
    after = experiment_status(audit, "canary", store)
    assert after.decision == "stopped" and after.conclusion.by == "admin-key"
    assert after.reasons == [f"stopped by admin-key at {payload['decided_at']}; final"]
    with pytest.raises(ExperimentConcluded, match="experiment 'canary' was already stopped by admin-key") as again:
        conclude_experiment(audit, None, "canary", "stop", "other-admin", status)
    assert again.value.code == "already_concluded" and audit.verify().ok


def test_of_two_admins_concluding_at_once_only_the_first_record_counts(example, monkeypatch):
    audit, store = example
    status = experiment_status(audit, "canary", store)
    first = conclude_experiment(audit, None, "canary", "stop", "admin-a", status)
    # The second admin checked before the first one's record landed: the append itself refuses.
    monkeypatch.setattr("rayfolio.serving.experiment_status.conclusion_of", lambda *_: None)
    with pytest.raises(ExperimentConcluded, match="already stopped by admin-a"):
        conclude_experiment(audit, None, "canary", "stop", "admin-b", status)
    assert audit.get(conclusion_id("canary")) == first and audit.count() == 10
