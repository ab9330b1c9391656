"""Walk-forward backtest: every strategy trades the same prices, on the same
rebalance calendar, under the same cost model.

A strategy is asked for target weights at the close of each rebalance date t,
seeing only data dated <= t and its own current (drifted) weights; it pays
``cost_bps`` per unit of turnover and then earns the returns of t+1 onwards.
Between rebalances the weights drift with prices. The arithmetic is the
environment's (``rebalance``), one day at a time, so an agent's backtest and
its evaluation episode agree to rounding.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from rayfolio.data.conventions import CASH
from rayfolio.rl.env import rebalance
from rayfolio.rl.market import MarketData

logger = logging.getLogger(__name__)


class Allocator(Protocol):
    name: str

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        """Target weights (N+1,), cash last, from data dated <= t; None keeps the current ones."""


@dataclass(frozen=True)
class StrategyRun:
    name: str
    returns: pd.Series  # daily net returns, indexed by date
    costs: pd.Series  # daily cost paid, a fraction of the portfolio's value
    weights: pd.DataFrame  # target weights at each rebalance date; columns: symbols, then CASH
    turnover: pd.Series  # per rebalance date


def rebalance_dates(first: int, last: int, every: int) -> np.ndarray:
    """Decision date indices first, first+every, ... before ``last`` (the last date only earns)."""
    return np.arange(first, last, every)


def simulate(
    allocator: Allocator,
    returns: np.ndarray,
    dates: np.ndarray,
    symbols: np.ndarray,
    decisions: np.ndarray,
    last: int,
    cost_bps: float,
) -> StrategyRun:
    """Run one allocator from cash over dates ``decisions[0]`` .. ``last``.

    ``returns`` (T, N) holds simple returns, ``returns[t]`` from t-1 to t, 0
    where unknown.
    """
    cost_rate = cost_bps / 1e4
    n = returns.shape[1]
    weights = np.zeros(n + 1)
    weights[-1] = 1.0
    growth = np.ones(n + 1)
    decide_at = set(decisions.tolist())
    days = np.arange(decisions[0], last)
    daily, costs, targets, turnovers, decided = [], [], [], [], []
    for t in days:
        target = allocator.decide(int(t), weights) if t in decide_at else None
        growth[:-1] = 1.0 + returns[t + 1]
        if target is None:
            weights, _, gross = rebalance(weights, weights, growth)
            cost = 0.0
        else:
            target = np.asarray(target, dtype=np.float64)
            if target.shape != (n + 1,) or not np.isclose(target.sum(), 1.0) or not np.isfinite(target).all():
                raise ValueError(
                    f"{allocator.name}: target weights at {dates[t]} must be {n + 1} finite values summing to 1"
                )
            weights, turnover, gross = rebalance(target, weights, growth)
            cost = cost_rate * turnover
            targets.append(target)
            turnovers.append(turnover)
            decided.append(dates[t])
        daily.append((1.0 - cost) * gross - 1.0)
        costs.append(cost)
    index = pd.DatetimeIndex(dates[days + 1], name="date")
    columns = [*map(str, symbols), CASH]
    decided_index = pd.DatetimeIndex(decided, name="date")
    return StrategyRun(
        allocator.name,
        pd.Series(daily, index=index, name=allocator.name),
        pd.Series(costs, index=index, name=allocator.name),
        pd.DataFrame(np.array(targets).reshape(-1, n + 1), index=decided_index, columns=columns),
        pd.Series(turnovers, index=decided_index, name=allocator.name, dtype=float),
    )


def run_backtest(
    allocators: list[Allocator], market: MarketData, period: tuple[int, int], every: int, cost_bps: float
) -> dict[str, StrategyRun]:
    """Every allocator over ``period`` (first, last date index) on one calendar, each one's time logged
    (the estimator baselines refit at every rebalance: their cost grows with the universe)."""
    decisions = rebalance_dates(period[0], period[1], every)
    runs = {}
    for a in allocators:
        start = time.perf_counter()
        runs[a.name] = simulate(a, market.returns, market.dates, market.symbols, decisions, period[1], cost_bps)
        logger.info("backtest: %s %.1f s", a.name, time.perf_counter() - start)
    return runs
