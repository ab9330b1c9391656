"""A recommendation, end to end, without Serve: validate against the market,
forecast (cached per date), allocate, filter, measure risk, audit.

The steps are plain functions and small classes so that the Serve
deployments can run them in separate processes and ``RecommendationEngine``
can run them in one (tests, batch jobs) with the same code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from rayfolio.rl.agents import AgentAllocator
from rayfolio.rl.measures import conditional_value_at_risk, value_at_risk
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.risk import Check, HouseLimits, MarketState, RiskProfile, apply_risk_filters, portfolio_vol
from rayfolio.serving.schemas import (
    CASH,
    CheckOut,
    PortfolioRisk,
    RecommendationRequest,
    RecommendationResponse,
    RiskProfileIn,
)
from rayfolio.training.ensemble import EnsembleForecast, ForecastEnsemble
from rayfolio.training.panel import Panel

LOOKBACK = 252  # trading days behind risk estimates


class RequestError(ValueError):
    """A request the market or the models cannot serve; ``code`` and ``status`` for the HTTP error."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status

    def __reduce__(self):  # travels between replicas with its code and status
        return type(self), (self.code, str(self), self.status)


class Market:
    """The served universe and calendar: symbol and date validation, daily returns."""

    def __init__(self, panel: Panel, min_history: int) -> None:
        self.dates = panel.dates
        self.symbols = tuple(str(s) for s in panel.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.returns = panel.daily_returns()  # (T, N) simple returns, 0 where missing
        self.first_servable = max(min_history, LOOKBACK) - 1
        self._states: dict[int, MarketState] = {}

    def state(self, t: int) -> MarketState:
        """The risk filters' view of the market at t (covariance, stress), once per date."""
        if t not in self._states:
            if len(self._states) >= 256:
                self._states.clear()
            self._states[t] = MarketState.from_returns(self.symbols, self.returns[t - LOOKBACK + 1 : t + 1])
        return self._states[t]

    def date_index(self, as_of: dt.date | None) -> int:
        """The last trading date on or before ``as_of`` (default: the latest)."""
        if as_of is None:
            return len(self.dates) - 1
        t = int(np.searchsorted(self.dates, np.datetime64(as_of, "D"), side="right")) - 1
        if t < self.first_servable or as_of > self.dates[-1].astype(dt.date):
            raise RequestError(
                "invalid_as_of",
                f"as_of {as_of} is outside the servable dates {self.dates[self.first_servable]} .. {self.dates[-1]}",
            )
        return t

    def check_symbols(self, symbols, where: str) -> None:
        unknown = sorted(set(symbols) - set(self.index))
        if unknown:
            raise RequestError("unknown_symbol", f"unknown symbols in {where}: {', '.join(unknown[:10])}")

    def weights_vector(self, portfolio: dict[str, float]) -> np.ndarray:
        """(N+1,) current weights, cash last."""
        self.check_symbols(portfolio, "portfolio")
        w = np.zeros(len(self.symbols) + 1)
        for symbol, weight in portfolio.items():
            w[self.index[symbol]] = weight
        w[-1] = 1.0 - w[:-1].sum()
        return w

    def validate(self, request: RecommendationRequest) -> tuple[int, np.ndarray]:
        """(date index, current weights) of a request, or a RequestError naming what is wrong."""
        self.check_symbols(request.risk_profile.exclude, "risk_profile.exclude")
        return self.date_index(request.as_of), self.weights_vector(request.portfolio)

    def named(self, weights: np.ndarray) -> dict[str, float]:
        named = {s: float(w) for s, w in zip(self.symbols, weights[:-1], strict=True) if abs(w) > 1e-12}
        named[CASH] = float(weights[-1])
        return named


def filter_and_measure(
    market: Market, t: int, proposal: np.ndarray, current: np.ndarray, profile: RiskProfileIn, limits: HouseLimits
) -> tuple[np.ndarray, list[Check], PortfolioRisk]:
    """The risk filters on the allocator's proposal, then the result's risk, from data dated <= t."""
    history = market.returns[t - LOOKBACK + 1 : t + 1]  # (LOOKBACK, N)
    state = market.state(t)
    weights, checks = apply_risk_filters(
        proposal, current, RiskProfile(profile.risk_tolerance, profile.max_position, tuple(profile.exclude)),
        limits, state,
    )  # fmt: skip
    daily = history @ weights[:-1]
    risk = PortfolioRisk(
        volatility=portfolio_vol(weights[:-1], state.covariance),
        var_95=value_at_risk(daily),
        cvar_95=conditional_value_at_risk(daily),
    )
    return weights, checks, risk


def build_response(
    market: Market,
    t: int,
    current: np.ndarray,
    weights: np.ndarray,
    checks: list[Check],
    risk: PortfolioRisk,
    forecast: EnsembleForecast,
    horizon_days: int,
    model_versions: dict[str, str],
    request_id: str | None = None,
) -> RecommendationResponse:
    h = forecast.horizons.index(horizon_days)
    return RecommendationResponse(
        request_id=request_id or uuid.uuid4().hex,
        as_of=market.dates[t].astype(dt.date),
        target_weights=market.named(weights),
        trades={k: v for k, v in market.named(weights - current).items() if abs(v) > 1e-9},
        expected_returns=dict(zip(market.symbols, forecast.expected_return[:, h].tolist(), strict=True)),
        confidence=dict(zip(market.symbols, forecast.confidence[:, h].tolist(), strict=True)),
        portfolio_risk=risk,
        checks=[CheckOut(name=c.name, changed=c.changed, detail=c.detail) for c in checks],
        model_versions=model_versions,
    )


def request_id_for(key: str, idempotency_key: str | None) -> str | None:
    """A retried request's id: the same for the same key id and ``Idempotency-Key``, so the
    audit log (unique request ids) records it once and the retry gets the first answer."""
    if idempotency_key is None:
        return None
    return hashlib.sha256(f"{key}\x1f{idempotency_key}".encode()).hexdigest()[:32]


def audit_recommendations(
    audit: AuditLog, entries: list[tuple[str, RecommendationRequest, RecommendationResponse]]
) -> list[RecommendationResponse | RequestError]:
    """(key id, request, response) records, committed together before any response leaves.

    Returns what each client gets: its response, or for a retry already recorded the
    recorded response (an ``Idempotency-Key`` reused with another body is an error instead)."""
    payloads = [{"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json")}
                for _, request, response in entries]  # fmt: skip
    records = audit.append_many([(key, response.request_id, "recommendation", payload)
                                 for (key, _, response), payload in zip(entries, payloads, strict=True)])  # fmt: skip
    served: list[RecommendationResponse | RequestError] = []
    for (key, _, response), payload, record in zip(entries, payloads, records, strict=True):
        if record.payload is payload:  # written by this call
            served.append(response)
        elif record.key_id == key and record.payload["request"] == payload["request"]:
            served.append(RecommendationResponse.model_validate(record.payload["response"]))
        else:
            served.append(idempotency_conflict())
    return served


def idempotency_conflict() -> RequestError:
    return RequestError(
        "idempotency_conflict", "this Idempotency-Key was used for a different request; use a new key per request", 409
    )


class ForecastCache:
    """Per-date ensemble forecasts, least recently used dropped first."""

    def __init__(self, ensemble: ForecastEnsemble, size: int = 64) -> None:
        self.ensemble, self.size = ensemble, size
        self._cache: OrderedDict[int, EnsembleForecast] = OrderedDict()
        self.hits = self.misses = 0

    def get_many(self, ts: list[int]) -> list[EnsembleForecast]:
        missing = sorted({t for t in ts if t not in self._cache})
        self.hits += len(ts) - len(missing)
        self.misses += len(missing)
        if missing:
            for t, forecast in zip(missing, self.ensemble.forecast_many(missing), strict=True):
                self._cache[t] = forecast
        for t in ts:
            self._cache.move_to_end(t)
        out = [self._cache[t] for t in ts]
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return out


@dataclass
class RecommendationEngine:
    panel: Panel
    ensemble: ForecastEnsemble
    allocator: AgentAllocator
    limits: HouseLimits
    audit: AuditLog
    model_versions: dict[str, str]
    cache_size: int = 64

    def __post_init__(self) -> None:
        self.market = Market(self.panel, max(self.ensemble.min_history, self.allocator.env.window))
        self.symbols = self.market.symbols
        self.forecasts = ForecastCache(self.ensemble, self.cache_size)

    def recommend(
        self, request: RecommendationRequest, key: str, idempotency_key: str | None = None
    ) -> RecommendationResponse:
        """Everything in one call; the audit record is committed before this returns. A repeated
        ``idempotency_key`` (same key, same request) returns the first response, recorded once."""
        t, current = self.market.validate(request)
        (forecast,) = self.forecasts.get_many([t])
        proposal = self.allocator.decide(t, current)
        weights, checks, risk = filter_and_measure(self.market, t, proposal, current, request.risk_profile,
                                                   self.limits)  # fmt: skip
        response = build_response(self.market, t, current, weights, checks, risk, forecast,
                                  request.risk_profile.horizon_days, self.model_versions,
                                  request_id_for(key, idempotency_key))  # fmt: skip
        (served,) = audit_recommendations(self.audit, [(key, request, response)])
        if isinstance(served, RequestError):
            raise served
        return served
