"""Goal planning's Monte Carlo (rl/planning.py): 10,000 paths x 480 months (40 years), the issue's
target being <= 200 ms for one plan.

Prints the median (and min) over ``--repeats`` runs, the machine being shared, of:
- the bootstrap alone (``monthly_growth``: the paths' monthly growth factors), on one thread and on
  the default threads, against a reference measured in the same run: the same stationary block
  bootstrap written as plain vectorised numpy (day by day: restart flags, block offsets, a gather
  and a sum per month; in batches of 1,000 paths to bound memory);
- one plan evaluation on given paths (wealth at every checkpoint, the probability, percentiles, fan);
- the full plan, end to end as ``POST /v1/plans`` runs it: the paths, the contribution needed for
  the target (the exact solve on the same paths) and the years needed (scanned up to 40).

Returns: a run's returns.parquet when there is one (``--run-dir``, default runs/quickstart), else a
synthetic 1,500-day history (fat tails, volatility regimes) so that the figure exists on a fresh clone.

    python -m bench.plan_mc [--run-dir runs/quickstart] [--strategy balanced] [--paths 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rayfolio.rl.planning import (
    TRADING_DAYS_PER_MONTH,
    PlanSpec,
    ReturnHistory,
    _grown,
    load_histories,
    monthly_growth,
    plan,
)


def numpy_monthly_growth(returns: np.ndarray, months: int, paths: int, block_length: float, seed: int,
                         batch: int = 1000) -> np.ndarray:  # fmt: skip
    """The reference: the same bootstrap day by day in vectorised numpy (other draws, same law)."""
    rng = np.random.default_rng(seed)
    logs, n, days = np.log1p(returns), len(returns), months * TRADING_DAYS_PER_MONTH
    out = np.empty((paths, months))
    day = np.arange(days)
    for lo in range(0, paths, batch):
        k = min(batch, paths - lo)
        restart = rng.random((k, days)) < 1.0 / block_length
        restart[:, 0] = True
        last = np.maximum.accumulate(np.where(restart, day, 0), axis=1)  # the day the current block began
        start = rng.integers(0, n, (k, days))
        index = (np.take_along_axis(start, last, axis=1) + day - last) % n
        out[lo : lo + k] = np.exp(logs[index].reshape(k, months, TRADING_DAYS_PER_MONTH).sum(axis=2))
    return out


def timed(f: Callable[[], object], repeats: int, warm: bool = True) -> tuple[float, float, float]:
    """Median and min wall ms, and median CPU ms (all threads): on a busy shared machine the CPU time
    is what the work costs, the wall time what a caller waited."""
    if warm:
        f()  # compiled, caches warm
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        f()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, min(wall) * 1e3, statistics.median(cpu) * 1e3


def history(run_dir: Path, strategy: str) -> ReturnHistory:
    path = run_dir / "returns.parquet"
    if path.is_file():
        return load_histories(path)[strategy]
    rng = np.random.default_rng(7)
    regimes = np.repeat(rng.uniform(0.5, 1.5, 30), 50)
    returns = 0.0005 + 0.008 * rng.standard_t(4, 1500) * regimes
    return ReturnHistory("synthetic", dt.date(2017, 1, 2), dt.date(2022, 12, 30), returns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--strategy", default="balanced")
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    h = history(args.run_dir, args.strategy)
    paths, months, r = args.paths, args.months, args.repeats
    threads = min(4, len(os.sched_getaffinity(0)))
    print(f"{h.strategy}: {len(h.returns)} days ({h.start} to {h.end}); {paths:,} paths x {months} months, "
          f"mean block 21 days; {os.cpu_count()} CPUs here, {threads} threads")  # fmt: skip
    print(f"wall ms: median (min) of {r} runs (the numpy reference: 1 run); CPU ms: median, all threads; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    def bootstrap(threads: int | None = None) -> np.ndarray:
        return monthly_growth(h.returns, months, paths, 21.0, 0, threads=threads)

    rows = [
        ("bootstrap, numba, 1 thread", timed(lambda: bootstrap(1), r)),
        (f"bootstrap, numba, {threads} threads", timed(bootstrap, r)),
        ("bootstrap, numpy reference", timed(lambda: numpy_monthly_growth(h.returns, months, paths, 21.0, 0), 1,
                                             warm=False)),
    ]  # fmt: skip
    growth = monthly_growth(h.returns, months, paths, 21.0, 0)
    checkpoints = np.arange(0, months + 1, 12)

    def evaluate() -> None:  # the probability, percentiles and fan at one contribution, on given paths
        a, b = _grown(growth, 10_000.0, checkpoints)
        wealth = a + 500.0 * b
        float(np.mean(wealth[:, -1] >= 1e6))
        np.percentile(wealth, (5, 25, 50, 75, 95), axis=0)

    rows.append(("one evaluation on given paths", timed(evaluate, r)))
    spec = PlanSpec(initial_wealth=10_000, goal=1_000_000, horizon_years=months / 12, monthly_contribution=500,
                    paths=paths)  # fmt: skip
    rows.append(("full plan (paths, contribution needed, years needed)", timed(lambda: plan(h, spec), r)))
    width = max(len(name) for name, _ in rows)
    for name, (median, best, cpu) in rows:
        print(f"  {name:<{width}}  wall {median:8.1f}  ({best:.1f})  CPU {cpu:8.1f}")


if __name__ == "__main__":
    main()
