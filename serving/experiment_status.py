"""How an experiment's two arms did, whether to promote the candidate, and the one conclusion.

Everything is read from the audit log: each "recommendation" record of an experiment carries
both arms' target weights, latency and error (serving/pipeline.py writes them; both arms decide
every request and one is served), so every request is a *paired* comparison of two portfolios
for the same client, holdings and day.

Realised differences. Each arm's portfolio earns the next trading day's close-to-close simple
returns (the store's ``ret_1`` on each symbol's next row, as ``Panel.next_returns``; cash earns
0), net of costs ``cost_bps / 1e4 * sum_i |w_arm,i - current_i|`` (current: the request's
portfolio). Per request d = r_candidate - r_control; per as_of date the mean d of that date's
requests, because every client on one date shares one market outcome: the date, not the request,
is the independent unit (thousands of requests on one day are one observation). A request whose
next day the store does not have yet is pending (counted, not scored); one where an arm failed
has no difference (its error counts in that arm's error rate). Reported: the mean per-date
difference, its HAC t (``training.significance.newey_west_mean``, lag ``newey_west_lag(n)``) and
an always-valid p-value.

Always-valid p-value: the mSPRT (Johari, Pekelis and Walsh 2017, "Always valid inference:
continuous monitoring of A/B tests"; normal mixture over the mean with variance tau^2) on the
per-date series, H0: mean = 0. After n dates with mean xbar and sample variance s2,
``Lambda_n = sqrt(s2 / (s2 + n tau2)) exp(n^2 tau2 xbar^2 / (2 s2 (s2 + n tau2)))`` and
``p_n = min(p_{n-1}, 1 / Lambda_n)``: it may be looked at after every date (the decision is) and
the chance that it ever falls below alpha under H0 stays about alpha, where a daily t-test's
would climb far above it.
- tau = TAU_RATIO (0.25) x the sample std of the per-date differences. The mixture then weighs
  edges around a quarter of the differences' daily std: that is the size a canary can find in a
  year (an edge of 5 bp/day against a 0.2%/day tracking error is 0.25 std), and it makes the test
  scale-free (Lambda depends on the t-ratio and n only). Wider (tau = 1 std) lost power on such
  edges and narrower (0.15) gave up more on larger ones (simulated; the test module's docstring).
- The variance is a plug-in estimate, which is noisy over a few dates and then lets the mSPRT
  reject far too often (simulated A/A: 14% false promotions when it starts at 2 dates); so p is 1
  for the first BURN_IN (10) dates and the running minimum starts there.

Decision rule (``decide``), on the records of the versions now in the experiment:
1. stop: with at least ``min_error_requests`` (100) requests, the candidate's error rate is above
   the control's by more than ``error_stop`` (5 percentage points): it is clearly broken; this
   needs no realised returns (its clients get the control's answers meanwhile, but why wait).
2. continue: fewer than ``min_dates`` (20) realised dates.
3. stop: p <= alpha (0.05) and the mean difference < 0: the candidate is worse.
4. promote: p <= alpha and the mean difference > 0, unless the candidate's error rate is above
   the control's by more than ``error_tolerance`` (1 point): then continue, saying so.
5. otherwise continue (no evidence either way yet).
Once a conclusion record exists (kind "experiment", request id ``experiment:<name>:conclusion``)
the decision is final: "promoted" or "stopped", by whom and when. The HAC t is reported for the
reader; the decision uses the mSPRT p-value, which is the one valid under daily looks.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, Field

from rayfolio.data.conventions import CASH
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import RECORDS, AuditLog, AuditRecord
from rayfolio.serving.experiments import Arm, conclusion_id
from rayfolio.training.panel import Panel
from rayfolio.training.significance import newey_west_lag, newey_west_mean

if TYPE_CHECKING:  # the registry loads torch; only promote uses one, and its caller has it
    from rayfolio.training.registry import ModelRegistry

ARMS: tuple[Arm, Arm] = ("control", "candidate")
TAU_RATIO = 0.25  # mSPRT mixture std as a multiple of the per-date differences' std (the docstring says why)
BURN_IN = 10  # dates before the plug-in variance is trusted: p-values start here
RECOMMENDATION, EXPERIMENT = "recommendation", "experiment"  # audit record kinds

Decision = Literal["continue", "promote", "stop"]
Action = Literal["promote", "stop"]


class ExperimentError(ValueError):
    """An experiment request that cannot be answered as asked; ``code`` is the HTTP error code."""

    code = "experiment_error"
    http_status = 400


class ExperimentNotFound(ExperimentError):
    code, http_status = "experiment_not_found", 404


class ExperimentNotReady(ExperimentError):
    """Promote asked while the decision is not promote."""

    code, http_status = "experiment_not_ready", 409


class ExperimentConcluded(ExperimentError):
    """A second conclusion of one experiment."""

    code, http_status = "already_concluded", 409


@dataclass(frozen=True)
class DecisionRule:
    alpha: float = 0.05  # the always-valid p-value at or below which the experiment concludes
    min_dates: int = 20  # realised dates before a return-based conclusion
    error_tolerance: float = 0.01  # candidate error rate above control's by more: no promotion
    error_stop: float = 0.05  # ... by more than this (over min_error_requests requests): stop
    min_error_requests: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ExperimentError(f"alpha must be between 0 and 1, got {self.alpha}")
        if self.min_dates < 1:
            raise ExperimentError(f"min_dates must be at least 1, got {self.min_dates}")


# ----- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmsRecord:
    """One audited request of the experiment: what both arms decided."""

    request_id: str
    as_of: dt.date
    assigned: Arm
    served: Arm
    model: str
    current: dict[str, float]  # the request's portfolio (symbol -> weight; the rest is cash)
    versions: dict[Arm, str]
    weights: dict[Arm, dict[str, float] | None]  # target weights, CASH included; None: the arm failed
    latency_ms: dict[Arm, float]
    error: dict[Arm, str | None]


def arms_record(request_id: str, payload: dict) -> ArmsRecord:
    experiment, arms = payload["experiment"], payload["experiment"]["arms"]
    return ArmsRecord(request_id, dt.date.fromisoformat(payload["response"]["as_of"]), experiment["arm"],
                      experiment["served_arm"], experiment["model"], payload["request"].get("portfolio") or {},
                      {a: arms[a]["version"] for a in ARMS}, {a: arms[a]["target_weights"] for a in ARMS},
                      {a: float(arms[a]["latency_ms"]) for a in ARMS}, {a: arms[a]["error"] for a in ARMS})  # fmt: skip


def read_experiment(audit: AuditLog, name: str) -> list[ArmsRecord]:
    """The experiment's recommendation records, in the order written."""
    # A text prefilter keeps the scan in the database (names have no LIKE wildcard but "_", which
    # only widens it); the exact test is on the parsed payload.
    query = (sa.select(RECORDS.c.request_id, RECORDS.c.payload)
             .where(RECORDS.c.kind == RECOMMENDATION, RECORDS.c.payload.like(f'%"name":"{name}"%'))
             .order_by(RECORDS.c.seq))  # fmt: skip
    with audit.engine.connect() as c:
        rows = c.execute(query).all()
    out = []
    for request_id, text in rows:
        payload = json.loads(text)
        if (payload.get("experiment") or {}).get("name") == name:
            out.append(arms_record(request_id, payload))
    return out


# ----- realised returns ----------------------------------------------------------------------


def next_day_returns(prices: FeatureStore | Panel, start: dt.date | None = None) -> pd.DataFrame:
    """(dates, symbols): the simple return from each date's close to the symbol's next close; NaN
    where the store has no next row yet. From a feature store (its ``ret_1``) or a loaded Panel."""
    if isinstance(prices, Panel):
        return pd.DataFrame(prices.next_returns, index=pd.DatetimeIndex(prices.dates),
                            columns=prices.symbols.tolist())  # fmt: skip
    if "ret_1" not in prices.feature_names:
        raise ExperimentError(f"store {prices.path}: has no ret_1 feature to take realised returns from")
    frame = prices.to_pandas(["ret_1"], start=None if start is None else start.isoformat())
    # ret_1 on a symbol's next row is the log return from this close to that one (its own calendar).
    frame["next"] = np.expm1(frame.groupby("symbol", sort=False)["ret_1"].shift(-1))
    return frame.pivot(index="date", columns="symbol", values="next")


def request_returns(records: list[ArmsRecord], returns: pd.DataFrame, cost_bps: float) -> pd.DataFrame:
    """Per request (index: request_id): ``as_of``, each arm's next-day return net of costs,
    ``difference`` (candidate - control; NaN where an arm failed or a held asset's return has not
    realised) and ``failed`` (an arm failed)."""
    symbols = sorted({s for r in records for w in (r.current, *(x or {} for x in r.weights.values())) for s in w}
                     - {CASH})  # fmt: skip
    index = pd.Index([r.request_id for r in records], name="request_id")
    dates = pd.DatetimeIndex([pd.Timestamp(r.as_of) for r in records])
    realised = returns.reindex(index=dates, columns=symbols).to_numpy(dtype=float)  # (R, N)
    current = pd.DataFrame([r.current for r in records], columns=symbols, dtype=float).fillna(0.0).to_numpy()
    out = pd.DataFrame({"as_of": dates}, index=index)
    for arm in ARMS:
        weights = pd.DataFrame([r.weights[arm] or {} for r in records], columns=symbols, dtype=float)
        held = weights.fillna(0.0).to_numpy()  # (R, N)
        net = (held * np.nan_to_num(realised)).sum(axis=1) - cost_bps / 1e4 * np.abs(held - current).sum(axis=1)
        net[((held != 0) & ~np.isfinite(realised)).any(axis=1)] = np.nan  # pending
        net[[r.weights[arm] is None for r in records]] = np.nan  # the arm failed
        out[arm] = net
    out["difference"] = out["candidate"] - out["control"]
    out["failed"] = [any(w is None for w in r.weights.values()) for r in records]
    return out


def per_date(differences: pd.DataFrame) -> pd.DataFrame:
    """(as_of dates with a realised difference, [difference, requests]): the mean difference of
    each date's scored requests, in date order."""
    scored = differences.dropna(subset=["difference"])
    grouped = scored.groupby("as_of")["difference"]
    return pd.DataFrame({"difference": grouped.mean(), "requests": grouped.size()}).sort_index()


# ----- the statistics ------------------------------------------------------------------------


def msprt_p_values(series: np.ndarray, tau_ratio: float = TAU_RATIO, burn_in: int = BURN_IN) -> np.ndarray:
    """Always-valid p-values of H0: mean = 0 after each prefix of a per-date series, shape (..., T)
    (vectorised over leading axes, e.g. simulated seeds); 1 before ``burn_in`` values. The mixing
    variance tau^2 is ``(tau_ratio * s)^2`` with s the prefix's sample std (the module docstring)."""
    x = np.asarray(series, dtype=float)
    n = np.arange(1, x.shape[-1] + 1, dtype=float)
    mean = np.cumsum(x, axis=-1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.maximum(np.cumsum(x * x, axis=-1) - n * mean**2, 0.0) / (n - 1)
        tau2 = tau_ratio**2 * s2
        log_lambda = (0.5 * np.log(s2 / (s2 + n * tau2))
                      + n**2 * tau2 * mean**2 / (2 * s2 * (s2 + n * tau2)))  # fmt: skip
    # s2 = 0 (every difference equal): none at all is no evidence, a constant non-zero one is certain.
    flat = s2 == 0
    log_lambda = np.where(flat, np.where(mean == 0, 0.0, np.inf), log_lambda)
    p = np.minimum(1.0, np.exp(-log_lambda))
    p[..., : max(burn_in, 2) - 1] = 1.0
    return np.minimum.accumulate(p, axis=-1)


class ExperimentDecision(BaseModel):
    decision: Decision
    reasons: list[str]


def decide(n_dates: int, mean: float | None, p_value: float, error_rates: dict[str, float | None], requests: int,
           rule: DecisionRule) -> ExperimentDecision:  # fmt: skip
    """The rule in the module docstring, on the comparison's figures and each arm's error rate."""
    control, candidate = (error_rates.get(a) or 0.0 for a in ARMS)
    errors = f"the candidate failed on {candidate:.1%} of requests, the control on {control:.1%}"
    if requests >= rule.min_error_requests and candidate - control > rule.error_stop:
        return ExperimentDecision(decision="stop", reasons=[f"{errors}: more than {rule.error_stop:.0%} points worse"])
    if n_dates < rule.min_dates:
        return ExperimentDecision(decision="continue", reasons=[f"{n_dates} realised dates, {rule.min_dates} needed"])
    evidence = f"always-valid p {p_value:.4g} {'<=' if p_value <= rule.alpha else '>'} {rule.alpha:g}"
    if p_value > rule.alpha or mean is None or mean == 0:
        return ExperimentDecision(decision="continue", reasons=[f"no evidence either way yet ({evidence})"])
    if mean < 0:
        return ExperimentDecision(decision="stop", reasons=[f"the candidate earns less than the control ({evidence})"])
    if candidate - control > rule.error_tolerance:
        return ExperimentDecision(decision="continue", reasons=[f"the candidate earns more ({evidence}), but {errors}"])
    return ExperimentDecision(decision="promote", reasons=[f"the candidate earns more than the control ({evidence})"])


# ----- the status ----------------------------------------------------------------------------


class ArmStatus(BaseModel):
    version: str
    requests: int = Field(description="requests assigned to this arm")
    served: int = Field(description="requests answered with this arm's decision (assigned, or the other arm failed)")
    errors: int = Field(description="requests whose computation on this arm failed (both arms compute every one)")
    error_rate: float = Field(description="errors / every request of the experiment")
    latency_p50_ms: float
    latency_p99_ms: float


class DateDifference(BaseModel):
    date: dt.date
    requests: int = Field(description="scored requests that date")
    difference: float = Field(description="mean of candidate - control net next-day return over them")
    p_value: float = Field(description="the always-valid p-value after this date")


class Comparison(BaseModel):
    cost_bps: float
    dates: int = Field(description="as_of dates with a realised difference")
    scored: int = Field(description="requests with a realised difference")
    pending: int = Field(description="requests whose next day has not realised yet")
    failed: int = Field(description="requests where an arm failed: no difference")
    mean_difference: float | None = Field(description="mean per-date difference, candidate - control, per day")
    hac_t: float | None = Field(description="Newey-West t of the mean (null: fewer than 3 dates)")
    hac_lag: int
    p_value: float = Field(description="always-valid (mSPRT) p-value of mean = 0, after the last date")
    tau: float | None = Field(description="the mixture's std: tau_ratio x the per-date differences' std")
    tau_ratio: float
    by_date: list[DateDifference]


class Conclusion(BaseModel):
    action: Action
    by: str
    decided_at: str


class ExperimentStatus(BaseModel):
    name: str
    model: str
    control: str = Field(description="the control arm's version")
    candidate: str = Field(description="the candidate arm's version")
    records: int = Field(description="recommendations of these two versions in the experiment")
    other_versions: int = Field(description="recommendations of the experiment with other versions, left out")
    first_as_of: dt.date
    last_as_of: dt.date
    arms: dict[Arm, ArmStatus]
    comparison: Comparison
    decision: Literal["continue", "promote", "stop", "promoted", "stopped"]
    reasons: list[str]
    conclusion: Conclusion | None = None
    alpha: float
    min_dates: int


def _number(x: float) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return float(x) if np.isfinite(x) else None


def _arm_status(records: list[ArmsRecord], arm: Arm, version: str) -> ArmStatus:
    latency = np.array([r.latency_ms[arm] for r in records])
    errors = sum(r.error[arm] is not None for r in records)
    return ArmStatus(version=version, requests=sum(r.assigned == arm for r in records),
                     served=sum(r.served == arm for r in records), errors=errors, error_rate=errors / len(records),
                     latency_p50_ms=float(np.percentile(latency, 50)),
                     latency_p99_ms=float(np.percentile(latency, 99)))  # fmt: skip


def compare(differences: pd.DataFrame, cost_bps: float) -> Comparison:
    """The comparison's figures from ``request_returns``."""
    dates = per_date(differences)
    series = dates["difference"].to_numpy()
    n = len(series)
    lag = newey_west_lag(n) if n else 0
    hac = newey_west_mean(series, lag)
    p = msprt_p_values(series) if n else np.ones(0)
    std = float(np.std(series, ddof=1)) if n > 1 else math.nan
    by_date = [DateDifference(date=d.date(), requests=int(row.requests), difference=float(row.difference),
                              p_value=float(pv)) for (d, row), pv in zip(dates.iterrows(), p, strict=True)]  # fmt: skip
    return Comparison(cost_bps=cost_bps, dates=n, scored=int(differences["difference"].notna().sum()),
                      pending=int((differences["difference"].isna() & ~differences["failed"]).sum()),
                      failed=int(differences["failed"].sum()),
                      mean_difference=_number(hac.mean), hac_t=_number(hac.t), hac_lag=lag,
                      p_value=float(p[-1]) if n else 1.0, tau=_number(TAU_RATIO * std), tau_ratio=TAU_RATIO,
                      by_date=by_date)  # fmt: skip


def conclusion_of(audit: AuditLog, name: str) -> AuditRecord | None:
    return audit.get(conclusion_id(name))


def experiment_status(audit: AuditLog, name: str, prices: FeatureStore | Panel, *, cost_bps: float = 10.0,
                      alpha: float = 0.05, min_dates: int = 20) -> ExperimentStatus:  # fmt: skip
    """The experiment ``name`` as the audit log has it, its returns from ``prices`` (a feature store
    or a loaded Panel); raises ``ExperimentNotFound`` when no recommendation names it."""
    if not (math.isfinite(cost_bps) and cost_bps >= 0):
        raise ExperimentError(f"cost_bps must be a number >= 0, got {cost_bps}")
    rule = DecisionRule(alpha=alpha, min_dates=min_dates)
    every = read_experiment(audit, name)
    if not every:
        raise ExperimentNotFound(f"experiment {name!r}: no recommendation in the audit log names it")
    # The versions now in the experiment (its last record's): records of earlier versions under the
    # same name compared something else and are left out.
    latest = every[-1]
    records = [r for r in every if r.versions == latest.versions and r.model == latest.model]
    differences = request_returns(records, next_day_returns(prices, min(r.as_of for r in records)), cost_bps)
    comparison = compare(differences, cost_bps)
    arms = {a: _arm_status(records, a, latest.versions[a]) for a in ARMS}
    verdict = decide(comparison.dates, comparison.mean_difference, comparison.p_value,
                     {a: s.error_rate for a, s in arms.items()}, len(records), rule)  # fmt: skip
    decision, reasons, conclusion = verdict.decision, verdict.reasons, None
    if (record := conclusion_of(audit, name)) is not None:
        payload = record.payload
        conclusion = Conclusion(action=payload["action"], by=payload["by"], decided_at=payload["decided_at"])
        decision = "promoted" if conclusion.action == "promote" else "stopped"
        reasons = [f"{decision} by {conclusion.by} at {conclusion.decided_at}; final"]
    return ExperimentStatus(name=name, model=latest.model, control=latest.versions["control"],
                            candidate=latest.versions["candidate"], records=len(records),
                            other_versions=len(every) - len(records), first_as_of=min(r.as_of for r in records),
                            last_as_of=max(r.as_of for r in records), arms=arms, comparison=comparison,
                            decision=decision, reasons=reasons, conclusion=conclusion, alpha=alpha,
                            min_dates=min_dates)  # fmt: skip


# ----- the conclusion ------------------------------------------------------------------------


def conclude_experiment(audit: AuditLog, registry: ModelRegistry | None, name: str, action: Action, key_id: str,
                        status: ExperimentStatus) -> AuditRecord:  # fmt: skip
    """Record the experiment's one conclusion (and for promote, point the model's production stage
    at the candidate). Promote is refused unless ``status`` decided promote; a second conclusion is
    refused. Returns the conclusion record."""
    if status.name != name:
        raise ExperimentError(f"a status of experiment {status.name!r} cannot conclude {name!r}")
    if (earlier := conclusion_of(audit, name)) is not None:
        raise _concluded(name, earlier)
    if action == "promote":
        if status.decision != "promote":
            raise ExperimentNotReady(f"experiment {name!r}: the decision is {status.decision}, not promote "
                                     f"({'; '.join(status.reasons)})")  # fmt: skip
        if registry is None:
            raise ExperimentError("promote needs the model registry")
        registry.get(status.model, status.candidate)  # verified before anything is recorded
    elif action != "stop":
        raise ExperimentError(f"an experiment concludes with promote or stop, not {action!r}")
    payload = {"name": name, "model": status.model, "control": status.control, "candidate": status.candidate,
               "action": action, "by": key_id, "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "status": status.model_dump(mode="json")}  # fmt: skip
    # The record first: appending it is atomic and idempotent by request id, so of two admins
    # concluding at once exactly one wins, and only the winner moves the registry.
    record = audit.append(key=key_id, request_id=conclusion_id(name), kind=EXPERIMENT, payload=payload)
    if record.payload is not payload:
        raise _concluded(name, record)
    if action == "promote":
        registry.promote(status.model, status.candidate)  # type: ignore[union-attr]
    return record


def _concluded(name: str, record: AuditRecord) -> ExperimentConcluded:
    done = "promoted" if record.payload["action"] == "promote" else "stopped"
    return ExperimentConcluded(f"experiment {name!r} was already {done} by {record.payload['by']} at "
                               f"{record.payload['decided_at']}")  # fmt: skip
