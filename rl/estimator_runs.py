"""The estimator baselines (minimum variance, maximum Sharpe, HRP) of the backtest, run as Ray tasks
where Ray is up (a cluster places each on any node with a free CPU), else in turn here; how many ran
at once is the backtest's parallelism, which its notes state."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray

from rayfolio.rl.backtest import StrategyRun
from rayfolio.rl.baselines import hierarchical_risk_parity, maximum_sharpe, minimum_variance, run_estimator
from rayfolio.rl.market import MarketData

logger = logging.getLogger(__name__)

ESTIMATORS = (minimum_variance, maximum_sharpe, hierarchical_risk_parity)
ESTIMATOR_CPUS = 1  # a refit is one single-threaded solve (numpy, Clarabel): one CPU each, so Ray spreads them


@dataclass(frozen=True)
class EstimatorRuns:
    runs: dict[str, StrategyRun]  # in ESTIMATORS' order
    failures: dict[str, list[str]]  # refits that failed and kept the previous weights, per estimator
    seconds: dict[str, float]
    at_once: int  # the most that ran at the same time: the backtest's parallelism
    on_ray: bool

    def note(self) -> str:
        where = f"as Ray tasks ({ESTIMATOR_CPUS} CPU each)" if self.on_ray else "one after another in the driver"
        times = ", ".join(f"{n} {s:.1f} s" for n, s in self.seconds.items())
        return f"Estimator baselines refitted at every rebalance {where}, {self.at_once} at once: {times}."


def start_estimators(market: MarketData, horizon: int, lookback: int, period: tuple[int, int], cost_bps: float, *,
                     on_ray: bool) -> list:  # fmt: skip
    """Minimum variance, maximum Sharpe and HRP: independent of each other, so each is a Ray task
    (``on_ray``) that a cluster places on any node with a free CPU; otherwise run here, in turn."""
    if not on_ray:
        return [run_estimator(make, market, horizon, lookback, period, cost_bps) for make in ESTIMATORS]
    # The task's function lives in rl/baselines.py: a worker imports that (skfolio), not this module's
    # agents and forecasters (torch).
    task = ray.remote(num_cpus=ESTIMATOR_CPUS)(run_estimator)
    shared = ray.put(market)  # one copy in the object store for the three tasks
    return [task.remote(make, shared, horizon, lookback, period, cost_bps) for make in ESTIMATORS]


def finish_estimators(pending: list) -> EstimatorRuns:
    on_ray = bool(pending) and isinstance(pending[0], ray.ObjectRef)
    results = ray.get(pending) if on_ray else pending
    for run, _, start, end in results:
        logger.info("backtest: %s %.1f s%s", run.name, end - start, " (Ray task)" if on_ray else "")
    return EstimatorRuns(
        runs={r.name: r for r, *_ in results},
        failures={r.name: f for r, f, *_ in results},
        seconds={r.name: end - start for r, _, start, end in results},
        at_once=most_at_once([(start, end) for *_, start, end in results]),
        on_ray=on_ray,
    )


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most (start, end) intervals that overlap at one instant (0 for none)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # ends first on ties
    best = running = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best
