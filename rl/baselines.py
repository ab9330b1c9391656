"""Baseline allocators: equal weight, skfolio's minimum variance, maximum
Sharpe and hierarchical risk parity refitted walk-forward on past returns only,
the forecast-driven top-k portfolio, and buy-and-hold.

The three estimators read the Ledoit-Wolf shrunk covariance (rl/covariance.py, the service's risk
checks read the same one), not the sample covariance: with hundreds of assets and a one-year
lookback N > L, the sample covariance is singular and skfolio repaired it per fit with an O(N^3)
nearest-positive-definite projection; the shrunk one is well conditioned by construction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from skfolio import RiskMeasure
from skfolio.exceptions import SkfolioError
from skfolio.optimization import HierarchicalRiskParity, MeanRisk, ObjectiveFunction
from skfolio.prior import EmpiricalPrior, ReturnDistribution

from rayfolio.rl.backtest import StrategyRun, run_backtest
from rayfolio.rl.covariance import LedoitWolf
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


def shrunk_prior() -> EmpiricalPrior:
    """Sample means and the Ledoit-Wolf covariance of the lookback's returns."""
    return EmpiricalPrior(covariance_estimator=LedoitWolf())


class CovarianceHRP(HierarchicalRiskParity):
    """skfolio's HRP (its distance, seriation, bisection and weight bounds unchanged) with the variance
    of each cluster's inverse-variance portfolio read straight off the prior's covariance, w' Sigma w on
    the cluster's assets, instead of through one skfolio Portfolio per asset and per cluster (~3N of
    them, each computing the (L,) portfolio returns and its measures: O(L N^2) and most of the fit).
    The same numbers as skfolio's for the variance risk measure without costs or fees (tests check it)."""

    def __init__(self, prior_estimator: EmpiricalPrior | None = None) -> None:
        super().__init__(risk_measure=RiskMeasure.VARIANCE, prior_estimator=prior_estimator)

    def _risk(self, weights: np.ndarray, return_distribution: ReturnDistribution) -> float:
        held = np.flatnonzero(weights)
        covariance = return_distribution.covariance[np.ix_(held, held)]  # (n, n) the cluster's block
        return float(weights[held] @ covariance @ weights[held])

    def _unitary_risks(self, return_distribution: ReturnDistribution) -> np.ndarray:
        return np.diag(return_distribution.covariance).copy()  # (N,) each asset alone


def minimum_variance(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator(
        "min_variance",
        lambda: MeanRisk(objective_function=ObjectiveFunction.MINIMIZE_RISK, prior_estimator=shrunk_prior()),
        market, horizon, lookback,
    )  # fmt: skip


def maximum_sharpe(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator(
        "max_sharpe",
        lambda: MeanRisk(objective_function=ObjectiveFunction.MAXIMIZE_RATIO, prior_estimator=shrunk_prior()),
        market, horizon, lookback,
    )  # fmt: skip


def hierarchical_risk_parity(market: MarketData, horizon: int, lookback: int) -> EstimatorAllocator:
    return EstimatorAllocator("hrp", lambda: CovarianceHRP(shrunk_prior()), market, horizon, lookback)


def run_estimator(
    make: Callable[[MarketData, int, int], EstimatorAllocator],
    market: MarketData,
    horizon: int,
    lookback: int,
    period: tuple[int, int],
    cost_bps: float,
) -> tuple[StrategyRun, list[str], float, float]:
    """One estimator baseline's backtest over ``period``, its failed refits and its (start, end)
    wall-clock times: a unit that can run anywhere (rl/stage.py runs each as a Ray task)."""
    allocator = make(market, horizon, lookback)
    start = time.time()
    run = run_backtest([allocator], market, period, horizon, cost_bps)[allocator.name]
    return run, allocator.failures, start, time.time()


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
