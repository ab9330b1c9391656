"""Baseline allocators: equal weight, skfolio's minimum variance, maximum
Sharpe and hierarchical risk parity refitted walk-forward on past returns only,
the forecast-driven top-k portfolio, and buy-and-hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from skfolio.exceptions import SkfolioError
from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction

from rayfolio.rl.market import MarketData


def _full(n: int, assets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weights over ``assets`` (indices) as a full (N+1,) vector, the rest in cash."""
    out = np.zeros(n + 1)
    out[assets] = values
    out[-1] = 1.0 - out[:-1].sum()
    return out


@dataclass
class EqualWeight:
    """1/n in every asset tradable over the next holding period."""

    market: MarketData
    horizon: int
    name: str = "equal_weight"

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        assets = np.flatnonzero(self.market.tradable(t, self.horizon))
        if len(assets) == 0:
            return None
        return _full(self.market.n_assets, assets, np.full(len(assets), 1.0 / len(assets)))


@dataclass
class EstimatorAllocator:
    """A skfolio estimator refitted at each rebalance on the last ``lookback``
    daily returns (dated <= t) of the assets with that much history.

    A fit the solver cannot finish keeps the current weights and is counted
    in ``failures`` (the report lists them).
    """

    name: str
    make: Callable[[], object]
    market: MarketData
    horizon: int
    lookback: int
    failures: list[str] = field(default_factory=list)

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        m = self.market
        # Returns t-lookback+1..t need a price at t-lookback.
        assets = np.flatnonzero(m.tradable(t, self.horizon) & (m.first <= t - self.lookback))
        if len(assets) < 2:
            return None
        history = pd.DataFrame(m.returns[t - self.lookback + 1 : t + 1, assets], columns=m.symbols[assets])
        try:
            fitted = self.make().fit(history)
        except (SkfolioError, ValueError) as err:
            self.failures.append(f"{m.dates[t]}: {err}")
            return None
        w = np.clip(np.asarray(fitted.weights_, dtype=np.float64), 0.0, None)
        if not np.isfinite(w).all() or w.sum() <= 0:
            self.failures.append(f"{m.dates[t]}: no usable weights")
            return None
        return _full(m.n_assets, assets, w / w.sum())


def minimum_variance(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator(
        "min_variance", lambda: MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK), market, horizon, lookback
    )


def maximum_sharpe(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator(
        "max_sharpe", lambda: MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO), market, horizon, lookback
    )


def hierarchical_risk_parity(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator("hrp", HierarchicalRiskParity, market, horizon, lookback)


@dataclass
class TopKForecast:
    """Equal weight in the ``k`` assets with the highest forecast at t."""

    market: MarketData
    scores: np.ndarray  # (T, N) forecasts made with data dated <= t; NaN where none
    k: int
    horizon: int
    name: str = "forecast_top_k"

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        scores = np.where(self.market.tradable(t, self.horizon), self.scores[t], np.nan)
        ranked = np.flatnonzero(np.isfinite(scores))
        if len(ranked) == 0:
            return None
        top = ranked[np.argsort(-scores[ranked], kind="stable")[: self.k]]
        return _full(self.market.n_assets, top, np.full(len(top), 1.0 / len(top)))


@dataclass
class BuyAndHold:
    """All in asset 0 at the first decision, then never trades (the index)."""

    name: str = "index_buy_hold"

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        if weights[-1] < 1.0:  # already invested
            return None
        return np.array([1.0, 0.0])
