"""A recommendation, end to end, without Serve: validate against the market,
forecast (cached per date), allocate, filter, measure risk, audit.

The Serve deployments split this across processes; keeping the logic here
lets it be tested, and reused by a batch job, without a running cluster.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from rayfolio.rl.agents import AgentAllocator
from rayfolio.rl.measures import conditional_value_at_risk, value_at_risk
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.ensemble import EnsembleForecast, ForecastEnsemble
from rayfolio.serving.risk import HouseLimits, MarketState, RiskProfile, apply_risk_filters, portfolio_vol
from rayfolio.serving.schemas import (
    CASH,
    CheckOut,
    PortfolioRisk,
    RecommendationRequest,
    RecommendationResponse,
)
from rayfolio.training.panel import Panel

LOOKBACK = 252  # trading days behind risk estimates


class RequestError(ValueError):
    """A request the market or the models cannot serve; ``code`` and ``status`` for the HTTP error."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.status = code, status


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
        self.symbols = tuple(str(s) for s in self.panel.symbols)
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._cache: OrderedDict[int, EnsembleForecast] = OrderedDict()
        log_1 = self.panel.features[..., self.panel.feature_names.index("ret_1")].astype(np.float64)
        self.returns = np.nan_to_num(np.expm1(log_1))  # (T, N) simple returns, 0 where missing
        self.first_servable = max(self.ensemble.min_history, self.allocator.env.window, LOOKBACK) - 1

    # ----- market -----------------------------------------------------------------

    def date_index(self, as_of: dt.date | None) -> int:
        """The last trading date on or before ``as_of`` (default: the latest)."""
        dates = self.panel.dates
        if as_of is None:
            return len(dates) - 1
        t = int(np.searchsorted(dates, np.datetime64(as_of, "D"), side="right")) - 1
        if t < self.first_servable or as_of > dates[-1].astype(dt.date):
            raise RequestError(
                "invalid_as_of",
                f"as_of {as_of} is outside the servable dates {dates[self.first_servable]} .. {dates[-1]}",
            )
        return t

    def weights_vector(self, portfolio: dict[str, float]) -> np.ndarray:
        unknown = sorted(set(portfolio) - set(self._index))
        if unknown:
            raise RequestError("unknown_symbol", f"unknown symbols in portfolio: {', '.join(unknown[:10])}")
        w = np.zeros(len(self.symbols) + 1)
        for symbol, weight in portfolio.items():
            w[self._index[symbol]] = weight
        w[-1] = 1.0 - w[:-1].sum()
        return w

    def forecast(self, t: int) -> EnsembleForecast:
        """Cached per date: forecasts depend on market data only, never on the user."""
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        self._cache[t] = self.ensemble.forecast(t)
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return self._cache[t]

    # ----- the recommendation -----------------------------------------------------

    def recommend(self, request: RecommendationRequest, key: str) -> RecommendationResponse:
        """Everything in one call; the audit record is committed before this returns."""
        profile = request.risk_profile
        unknown = sorted(set(profile.exclude) - set(self._index))
        if unknown:
            raise RequestError("unknown_symbol", f"unknown symbols in risk_profile.exclude: {', '.join(unknown[:10])}")
        current = self.weights_vector(request.portfolio)
        t = self.date_index(request.as_of)
        forecast = self.forecast(t)
        proposal = self.allocator.decide(t, current)
        history = self.returns[t - LOOKBACK + 1 : t + 1]  # (LOOKBACK, N), dated <= t
        state = MarketState.from_returns(self.symbols, history)
        weights, checks = apply_risk_filters(
            proposal, current, RiskProfile(profile.risk_tolerance, profile.max_position, tuple(profile.exclude)),
            self.limits, state,
        )  # fmt: skip
        h = forecast.horizons.index(profile.horizon_days)
        daily = history @ weights[:-1]
        response = RecommendationResponse(
            request_id=uuid.uuid4().hex,
            as_of=self.panel.dates[t].astype(dt.date),
            target_weights=self._named(weights),
            trades={k: v for k, v in self._named(weights - current).items() if abs(v) > 1e-9},
            expected_returns=dict(zip(self.symbols, forecast.expected_return[:, h].tolist(), strict=True)),
            confidence=dict(zip(self.symbols, forecast.confidence[:, h].tolist(), strict=True)),
            portfolio_risk=PortfolioRisk(
                volatility=portfolio_vol(weights[:-1], state.covariance),
                var_95=value_at_risk(daily),
                cvar_95=conditional_value_at_risk(daily),
            ),
            checks=[CheckOut(name=c.name, changed=c.changed, detail=c.detail) for c in checks],
            model_versions=self.model_versions,
        )
        self.audit.append(
            key=key,
            request_id=response.request_id,
            kind="recommendation",
            payload={"request": request.model_dump(mode="json"), "response": response.model_dump(mode="json")},
        )
        return response

    def _named(self, weights: np.ndarray) -> dict[str, float]:
        named = {s: float(w) for s, w in zip(self.symbols, weights[:-1], strict=True) if abs(w) > 1e-12}
        named[CASH] = float(weights[-1])
        return {k: (0.0 if math.isclose(v, 0.0, abs_tol=1e-15) else v) for k, v in named.items()}
