"""THE recommendation pipeline: validate -> proposal -> risk filters -> measures -> audit.

One implementation for every caller: the ingress (both placements), batch and offline use,
and the tests. What changes between callers is only where two steps run, so those are
passed in:

- forecasts: the ensemble's per-date forecasts, computed here (``LocalForecasts``) or fetched
  from the Ensemble deployment (``DeploymentForecasts``); either way cached per date.
- decisions: the allocator's proposal (a policy or the forecast tilt, which reads the date's
  forecasts: so forecasts come first) and the risk filters, run here (``LocalDecisions``) or in
  the Allocator and RiskFilter deployments (``DeploymentDecisions``: one call each per batch).

Requests are decided in batches (one policy forward pass, one audit transaction committed
before any response leaves); a batch of one is the single-request case.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from rayfolio.rl.measures import conditional_value_at_risk, value_at_risk
from rayfolio.serving.allocator import Proposer
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.cache import LruCache
from rayfolio.serving.errors import RequestError, idempotency_conflict
from rayfolio.serving.experiments import ExperimentConfig, arm_of
from rayfolio.serving.market import Market
from rayfolio.serving.risk import Check, HouseLimits, RiskProfile, apply_risk_filters, approval_reasons, portfolio_vol
from rayfolio.serving.schemas import (
    CheckOut,
    ExperimentArm,
    PortfolioRisk,
    RecommendationRequest,
    RecommendationResponse,
    RiskProfileIn,
)
from rayfolio.training.ensemble import EnsembleForecast, ForecastEnsemble

Decided = tuple[np.ndarray, list[Check], PortfolioRisk]  # filtered weights (N+1,), checks, portfolio risk


def filter_and_measure(
    market: Market, t: int, proposal: np.ndarray, current: np.ndarray, profile: RiskProfileIn, limits: HouseLimits
) -> Decided:
    """The risk filters on the allocator's proposal, then the result's risk, from data dated <= t."""
    state = market.state(t)
    weights, checks = apply_risk_filters(
        proposal, current, RiskProfile(profile.risk_tolerance, profile.max_position, tuple(profile.exclude)),
        limits, state,
    )  # fmt: skip
    daily = market.history(t) @ weights[:-1]  # (LOOKBACK,) the filtered portfolio's daily returns
    risk = PortfolioRisk(
        volatility=portfolio_vol(weights[:-1], state.covariance),
        var_95=value_at_risk(daily),
        cvar_95=conditional_value_at_risk(daily),
    )
    return weights, checks, risk


# ----- where the steps run -----------------------------------------------------------------------


class Forecasts(Protocol):
    cache: LruCache[int, EnsembleForecast]

    async def get(self, ts: list[int]) -> dict[int, EnsembleForecast]: ...


class LocalForecasts:
    """The ensemble in this process, per-date forecasts cached (they depend on market data only)."""

    def __init__(self, ensemble: ForecastEnsemble, cache_size: int = 64) -> None:
        self.ensemble, self.cache = ensemble, LruCache[int, EnsembleForecast](cache_size)

    def get_now(self, ts: list[int]) -> list[EnsembleForecast]:
        return self.cache.get_many(ts, self.ensemble.forecast_many)

    async def get(self, ts: list[int]) -> dict[int, EnsembleForecast]:
        return dict(zip(ts, self.get_now(ts), strict=True))


class DeploymentForecasts:
    """The Ensemble deployment's forecasts, kept here too: a date's forecast never changes while
    these models serve, so repeats skip the hop. ``overrides`` ({model: version}): the ensemble with
    those versions in place of the production ones (an experiment's arm)."""

    def __init__(self, ensemble, cache_size: int = 256, overrides: dict[str, str] | None = None) -> None:
        self.ensemble, self.cache = ensemble, LruCache[int, EnsembleForecast](cache_size)
        self.overrides = overrides or None

    async def _fetch(self, ts: list[int]) -> list[EnsembleForecast]:
        extra = () if self.overrides is None else (self.overrides,)
        return list(await asyncio.gather(*(self.ensemble.forecast.remote(t, *extra) for t in ts)))

    async def get(self, ts: list[int]) -> dict[int, EnsembleForecast]:
        return dict(zip(ts, await self.cache.aget_many(ts, self._fetch), strict=True))


class Decisions(Protocol):
    limits: HouseLimits

    async def decide(
        self,
        ts: list[int],
        currents: list[np.ndarray],
        profiles: list[RiskProfileIn],
        forecasts: list[EnsembleForecast],
    ) -> list[Decided]: ...


class LocalDecisions:
    """The allocator's proposals (serving/allocator.py) and the risk filters in this process.
    ``limits`` may change while it serves."""

    def __init__(self, proposer: Proposer, market: Market, limits: HouseLimits) -> None:
        self.proposer, self.market, self.limits = proposer, market, limits

    async def decide(self, ts, currents, profiles, forecasts) -> list[Decided]:
        proposals = self.proposer.propose_many(ts, currents, forecasts)  # one policy forward pass for the batch
        return [filter_and_measure(self.market, t, p, c, profile, self.limits)
                for t, p, c, profile in zip(ts, proposals, currents, profiles, strict=True)]  # fmt: skip


class DeploymentDecisions:
    """The Allocator and RiskFilter deployments: one call to each per batch. Their house limits
    are the RiskFilter's (its ``user_config``)."""

    limits = None  # held by the RiskFilter deployment

    def __init__(self, allocator, risk_filter) -> None:
        self.allocator, self.risk_filter = allocator, risk_filter

    async def decide(self, ts, currents, profiles, forecasts) -> list[Decided]:
        proposals = await self.allocator.propose_many.remote(ts, currents, forecasts)
        return await self.risk_filter.apply_many.remote(
            [(t, p, c, profile.model_dump()) for t, p, c, profile in zip(ts, proposals, currents, profiles,
                                                                           strict=True)]
        )  # fmt: skip


# ----- the pipeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """A request that passed validation against the market, ready to join a batch."""

    key_id: str  # who asked (a hash of the API key; audit.key_id)
    request: RecommendationRequest
    t: int  # date index
    current: np.ndarray  # (N+1,) current weights, cash last
    request_id: str | None  # from the Idempotency-Key; None: a fresh one
    client_id: str = ""  # what an experiment assigns arms by: the X-Client-Id header, else key_id


def request_id_for(key_id: str, idempotency_key: str | None) -> str | None:
    """A retried request's id: the same for the same key id and ``Idempotency-Key``, so the
    audit log (unique request ids) records it once and the retry gets the first answer."""
    if idempotency_key is None:
        return None
    return hashlib.sha256(f"{key_id}\x1f{idempotency_key}".encode()).hexdigest()[:32]


def business_days_after(now: dt.datetime, days: int) -> dt.datetime:
    """``now`` moved ``days`` business days (Monday to Friday) ahead, same time of day: how long a
    recommendation stays valid (one trading day by default; exchange holidays are not modelled)."""
    day = np.busday_offset(np.datetime64(now.date(), "D"), days, roll="forward")
    return dt.datetime.combine(day.astype(dt.date), now.timetz())


@dataclass(frozen=True)
class Arm:
    """One side of an experiment: where its forecasts and decisions come from, what it serves."""

    version: str  # the experiment's model at this arm's version
    forecasts: Forecasts | None  # None: the pipeline's own (an allocator experiment)
    decisions: Decisions | None  # None: the pipeline's own (a forecaster experiment)
    model_versions: dict[str, str]  # every model this arm serves


@dataclass(frozen=True)
class LiveExperiment:
    config: ExperimentConfig
    control: Arm
    candidate: Arm
    # Once concluded (a conclusion record in the audit log), everyone gets the winner and no arm is tagged.
    concluded: Literal["promote", "stop"] | None = None

    def arm(self, name: str) -> Arm:
        return self.control if name == "control" else self.candidate


@dataclass
class ArmOutcome:
    """One arm's decisions for a batch, or the error that stopped it, and how long it took."""

    decided: list[Decided] | None
    forecasts: dict[int, EnsembleForecast] = field(default_factory=dict)
    latency_ms: float = 0.0
    error: Exception | None = None


ArmObserver = Callable[[str, str, float, bool, int], None]  # (experiment, arm, latency ms, ok, requests)


class RecommendationPipeline:
    def __init__(
        self,
        market: Market,
        forecasts: Forecasts,
        decisions: Decisions,
        audit: AuditLog,
        model_versions: dict[str, str],
        limits: HouseLimits | None = None,
    ) -> None:
        self.market, self.forecasts, self.decisions = market, forecasts, decisions
        self.audit, self.model_versions = audit, model_versions
        self.limits = limits or getattr(decisions, "limits", None) or HouseLimits()  # its approval rules
        self.experiment: LiveExperiment | None = None  # swapped whole by the service
        self.observe_arm: ArmObserver | None = None  # per-arm metrics (the service's)

    def admit(
        self,
        request: RecommendationRequest,
        key_id: str,
        idempotency_key: str | None = None,
        client_id: str | None = None,
    ) -> Admitted | RecommendationResponse:
        """Validate against the market (a bad request fails alone, before it joins a batch). A retry
        of a recorded request (same key id, same ``Idempotency-Key``) gets its recorded response."""
        t, current = self.market.validate(request)
        request_id = request_id_for(key_id, idempotency_key)
        if request_id is not None and (record := self.audit.get(request_id)) is not None:
            if record.key_id != key_id or record.payload["request"] != request.model_dump(mode="json"):
                raise idempotency_conflict()
            return RecommendationResponse.model_validate(record.payload["response"])
        return Admitted(key_id, request, t, current, request_id, client_id or key_id)

    async def _decide(
        self, forecasts: Forecasts, decisions: Decisions, batch: Sequence[Admitted]
    ) -> tuple[list[Decided], dict[int, EnsembleForecast]]:
        ts = [a.t for a in batch]
        # Forecasts first: the allocator may propose from them (the tilt); they are cached per date.
        by_date = await forecasts.get(sorted(set(ts)))
        decided = await decisions.decide(
            ts, [a.current for a in batch], [a.request.risk_profile for a in batch], [by_date[t] for t in ts]
        )
        return decided, by_date

    async def _arm(self, arm: Arm, batch: Sequence[Admitted]) -> ArmOutcome:
        started = time.perf_counter()
        try:
            decided, by_date = await self._decide(arm.forecasts or self.forecasts, arm.decisions or self.decisions,
                                                  batch)  # fmt: skip
        except Exception as err:
            return ArmOutcome(None, latency_ms=(time.perf_counter() - started) * 1e3, error=err)
        return ArmOutcome(decided, by_date, (time.perf_counter() - started) * 1e3)

    async def run(self, batch: Sequence[Admitted]) -> list[RecommendationResponse | RequestError]:
        """Decide a batch, audit it in one transaction, and return what each caller gets."""
        experiment = self.experiment  # read once: a reconfiguration mid-batch does not split it
        if experiment is None or experiment.concluded is not None:
            if experiment is None:
                forecasts, decisions, versions = self.forecasts, self.decisions, self.model_versions
            else:
                winner = experiment.arm("candidate" if experiment.concluded == "promote" else "control")
                forecasts, decisions = winner.forecasts or self.forecasts, winner.decisions or self.decisions
                versions = winner.model_versions
            decided, by_date = await self._decide(forecasts, decisions, batch)
            responses = [self._response(a, by_date[a.t], *d, versions) for a, d in zip(batch, decided, strict=True)]
            return self._audit([(a.key_id, a.request, r, None) for a, r in zip(batch, responses, strict=True)])
        return self._audit(await self._run_arms(experiment, batch))

    async def _run_arms(self, experiment: LiveExperiment, batch: Sequence[Admitted]) -> list:
        """Both arms decide the whole batch (a failed arm is measured, and its clients get the other
        arm's answer); each client gets its assigned arm's. Returns the audit entries."""
        config = experiment.config
        outcomes = dict(zip(("control", "candidate"), await asyncio.gather(
            self._arm(experiment.control, batch), self._arm(experiment.candidate, batch)), strict=True))  # fmt: skip
        if all(o.error is not None for o in outcomes.values()):
            raise outcomes["control"].error  # type: ignore[misc]
        if self.observe_arm is not None:
            for name, outcome in outcomes.items():
                self.observe_arm(config.name, name, outcome.latency_ms, outcome.error is None, len(batch))
        entries = []
        for i, a in enumerate(batch):
            assigned = arm_of(config.salt, a.client_id, config.candidate_percent)
            served = assigned if outcomes[assigned].error is None else ("candidate" if assigned == "control"
                                                                         else "control")  # fmt: skip
            outcome = outcomes[served]
            tag = ExperimentArm(name=config.name, arm=assigned, fallback=served != assigned)
            response = self._response(a, outcome.forecasts[a.t], *outcome.decided[i],  # type: ignore[index]
                                      experiment.arm(served).model_versions, tag)  # fmt: skip
            arms = {name: {"version": experiment.arm(name).version,
                           "target_weights": None if o.error else self.market.named(o.decided[i][0]),  # type: ignore[index]
                           "latency_ms": round(o.latency_ms, 3),
                           "error": None if o.error is None else f"{type(o.error).__name__}: {o.error}"[:300]}
                    for name, o in outcomes.items()}  # fmt: skip
            record = {"name": config.name, "model": config.model, "arm": assigned, "served_arm": served, "arms": arms}
            entries.append((a.key_id, a.request, response, record))
        return entries

    async def recommend(
        self, request: RecommendationRequest, key_id: str, idempotency_key: str | None = None
    ) -> RecommendationResponse:
        """One request through the whole pipeline; raises ``RequestError`` for one it cannot serve."""
        admitted = self.admit(request, key_id, idempotency_key)
        if isinstance(admitted, RecommendationResponse):
            return admitted
        (served,) = await self.run([admitted])
        if isinstance(served, RequestError):
            raise served
        return served

    def recommend_offline(
        self, requests: Sequence[RecommendationRequest], key_id: str
    ) -> list[RecommendationResponse | RequestError]:
        """Batch use without a server: every request decided in one batch (those the market cannot
        serve get their ``RequestError`` in their place), audited like the service's."""
        admitted: list[Admitted | RequestError] = []
        for request in requests:
            try:
                admitted.append(self.admit(request, key_id))
            except RequestError as err:
                admitted.append(err)
        runnable = [a for a in admitted if isinstance(a, Admitted)]
        served = iter(asyncio.run(self.run(runnable)) if runnable else [])
        return [next(served) if isinstance(a, Admitted) else a for a in admitted]

    def _response(
        self,
        a: Admitted,
        forecast: EnsembleForecast,
        weights: np.ndarray,
        checks: list[Check],
        risk: PortfolioRisk,
        model_versions: dict[str, str] | None = None,
        experiment: ExperimentArm | None = None,
    ) -> RecommendationResponse:
        market, h = self.market, forecast.horizons.index(a.request.risk_profile.horizon_days)
        limits = self.limits
        reasons = approval_reasons(weights - a.current, market.symbols, limits)
        return RecommendationResponse(
            request_id=a.request_id or uuid.uuid4().hex,
            as_of=market.dates[a.t].astype(dt.date),
            target_weights=market.named(weights),
            trades={k: v for k, v in market.named(weights - a.current).items() if abs(v) > 1e-9},
            expected_returns=dict(zip(market.symbols, forecast.expected_return[:, h].tolist(), strict=True)),
            confidence=dict(zip(market.symbols, forecast.confidence[:, h].tolist(), strict=True)),
            portfolio_risk=risk,
            checks=[CheckOut(name=c.name, changed=c.changed, detail=c.detail, amount=c.amount) for c in checks],
            model_versions=model_versions if model_versions is not None else self.model_versions,
            status="pending_approval" if reasons else "ok",
            executable=not reasons,
            valid_until=business_days_after(dt.datetime.now(dt.UTC).replace(microsecond=0), limits.valid_for_days),
            approval_reasons=reasons,
            experiment=experiment,
        )

    def _audit(
        self, entries: list[tuple[str, RecommendationRequest, RecommendationResponse, dict | None]]
    ) -> list[RecommendationResponse | RequestError]:
        """(key id, request, response, experiment record or None), committed together before any
        response leaves.

        Returns what each client gets: its response, or for a retry already recorded (one that
        raced its first try) the recorded response; an ``Idempotency-Key`` reused with another
        body is an error instead."""
        payloads = [{"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json")}
                    | ({"experiment": experiment} if experiment is not None else {})
                    for _, request, response, experiment in entries]  # fmt: skip
        records = self.audit.append_many([(key, response.request_id, "recommendation", payload)
                                          for (key, _, response, _), payload in zip(entries, payloads,
                                                                                    strict=True)])  # fmt: skip
        served: list[RecommendationResponse | RequestError] = []
        for (key, _, response, _), payload, record in zip(entries, payloads, records, strict=True):
            if record.payload is payload:  # written by this call
                served.append(response)
            elif record.key_id == key and record.payload["request"] == payload["request"]:
                served.append(RecommendationResponse.model_validate(record.payload["response"]))
            else:
                served.append(idempotency_conflict())
        return served
