"""Goal-based planning: the chance that a strategy takes today's wealth plus monthly contributions
to a goal by a horizon, by Monte Carlo over its own backtested daily net returns.

Paths: a stationary block bootstrap (Politis & Romano 1994) of the daily returns: blocks of
geometric length (mean ``block_length`` days) starting at uniformly drawn days, read forward with a
circular wrap, so volatility clustering and short-term serial dependence within a block survive.
Every 21 trading days make one month; wealth then follows W(m+1) = W(m) * g(m) + c, the
contribution c paid at each month's end, after that month's growth.

Common random numbers: one set of paths per (returns, paths, block length, seed), always
``search_years`` long, serves every question a plan asks (the horizon's probability, the fan, the
years needed, the contribution needed) and every horizon up to it, so answers agree with each other.
Wealth at any month is A + c * B per path (A: the initial wealth grown, B: one unit contributed
monthly, grown; B >= 1 after the first month), so the probability never decreases as the
contribution grows, and the contribution needed for a target probability is solved exactly on
those paths: the k-th smallest per-path contribution (goal - A) / B, k = ceil(target * paths).
That is the limit a bisection on the same draws converges to, without its tolerance.

"Reaching the goal" means wealth >= goal at the horizon. Along one path wealth can fall, so this
probability is not monotone in the horizon in general (a goal below today's wealth is likelier met
next month than in ten years); the years needed are the smallest whole year at which it reaches the
target, scanned year by year on the same paths.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

TRADING_DAYS_PER_MONTH = 21
SEARCH_YEARS = 40  # the years needed are looked for within this many years
DEFAULT_BLOCK_LENGTH = 21.0  # a month of trading days: keeps a month's autocorrelation and volatility regime
CHUNK = 1024  # paths per random stream (and per task when several threads draw)
MIN_DAYS = 63  # a quarter of history at least: fewer is not a distribution to resample
PERCENTILES = (5, 25, 50, 75, 95)
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
SERVED_PREFIX = "served_"  # rl/report.py's name for the served path's strategies: served_<profile>
MONEY = 1e12  # bound on amounts: far above any plan, far below where float64 sums lose cents


class PlanError(ValueError):
    """Returns or a plan that cannot be used; the message names what and where."""


# ----- the returns a plan resamples --------------------------------------------------------------


@dataclass(frozen=True)
class ReturnHistory:
    """One strategy's daily net returns (simple, not log) from a backtest, oldest first."""

    strategy: str
    start: dt.date
    end: dt.date
    returns: np.ndarray

    def __post_init__(self) -> None:
        r = self.returns
        if r.ndim != 1 or len(r) < MIN_DAYS:
            raise PlanError(f"{self.strategy}: {len(r)} daily returns; a plan needs at least {MIN_DAYS}")
        if not np.all(np.isfinite(r)) or np.any(r <= -1.0):
            raise PlanError(f"{self.strategy}: daily returns must be finite and above -100%")


def load_histories(path: Path) -> dict[str, ReturnHistory]:
    """Every strategy in a backtest's returns.parquet (DESIGN.md: one column per strategy, date
    index), by the names a plan accepts: the column, and for ``served_<profile>`` the profile too."""
    import pandas as pd  # only here: the numeric core needs numpy alone

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise PlanError(f"{path.name}: cannot read the backtest's returns ({type(err).__name__})") from None
    frame = frame.sort_index()
    dates = pd.DatetimeIndex(frame.index)
    out: dict[str, ReturnHistory] = {}
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=float)
        held = ~np.isnan(values)  # a strategy that starts later than the others: its own window
        if held.sum() < MIN_DAYS:
            continue
        days = dates[held]
        history = ReturnHistory(str(column), days[0].date(), days[-1].date(), values[held].copy())
        history.returns.setflags(write=False)
        out[str(column)] = history
        if str(column).startswith(SERVED_PREFIX):
            out.setdefault(str(column).removeprefix(SERVED_PREFIX), history)
    return out


# ----- the plan's inputs and outputs -------------------------------------------------------------


class PlanSpec(BaseModel):
    """What a plan asks. Amounts in one currency; the horizon in years, rounded to whole months."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    initial_wealth: float = Field(0.0, ge=0, le=MONEY, description="wealth today")
    goal: float = Field(gt=0, le=MONEY, description="the wealth to reach by the horizon")
    # Fractions of a year allowed, rounded to whole months; the schema's minimum is one month, the
    # validator says so in words rather than as 0.0833...
    horizon_years: float = Field(le=SEARCH_YEARS, json_schema_extra={"minimum": 1 / 12},
                                 description="years to the goal, 1/12 (a month) to 40, in whole months")  # fmt: skip
    monthly_contribution: float = Field(0.0, ge=0, le=MONEY, description="paid at each month's end")
    target_probability: float = Field(0.8, gt=0, lt=1, description="the probability the plan should reach")
    # At most 100,000: 40 years of monthly growth for them is ~390 MB.
    paths: int = Field(10_000, ge=100, le=100_000, description="Monte Carlo paths")
    block_length: float = Field(DEFAULT_BLOCK_LENGTH, ge=1, le=252, description="mean bootstrap block, trading days")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    max_monthly_contribution: float | None = Field(
        None, gt=0, le=MONEY,
        description="the most one can contribute a month (default: the goal, which always suffices: the last "
        "month's contribution alone reaches it); above it the target is reported unreachable",
    )  # fmt: skip

    @field_validator("horizon_years")
    @classmethod
    def _one_month(cls, years: float) -> float:
        if years < 1 / 12:
            raise ValueError("must be at least one month (1/12 of a year)")
        return years

    @property
    def months(self) -> int:
        return round(self.horizon_years * 12)

    @property
    def contribution_cap(self) -> float:
        return self.goal if self.max_monthly_contribution is None else self.max_monthly_contribution


class Percentiles(BaseModel):
    model_config = ConfigDict(frozen=True)

    p5: float
    p25: float
    p50: float
    p75: float
    p95: float


class FanBand(Percentiles):
    year: float  # 0, 1, 2 ... and the horizon itself when it is not a whole year


class Provenance(BaseModel):
    model_config = ConfigDict(frozen=True)

    strategy: str
    data_start: dt.date
    data_end: dt.date
    days: int
    paths: int
    block_length: float
    seed: int
    months: int  # the horizon in months


class PlanResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    probability: float  # of wealth >= goal at the horizon, at the given contribution
    probability_ci: tuple[float, float]  # Wilson 95% interval: Monte Carlo error only
    terminal_wealth: Percentiles
    fan: list[FanBand]
    target_probability: float
    required_monthly_contribution: float | None  # None when above the cap
    reachable: bool
    contribution_cap: float
    years_needed: int | None  # None when not within search_years
    provenance: Provenance
    caveat: str


# ----- the Monte Carlo ---------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _monthly_growth(level: np.ndarray, out: np.ndarray, per_month: int, mean_block: float, rng) -> None:
    """``out`` (paths, months) filled with the growth factors of a stationary block bootstrap of the
    returns whose growth index is ``level`` (n + 1 values: level[0] = 1, level[k] = prod(1 + r[:k])).

    Blocks are drawn, not days: a start day (uniform) and a length (1 + floor(E / -log(1 - 1/L)),
    E exponential: geometric with mean L). The drawing order is fixed (path by path, block by block),
    so a generator gives the same paths on any machine. The growth over days [s, s + k) is
    level[s + k] / level[s], wrapping past the last day once at most (k <= per_month <= n): a
    division per piece and no exp per month.
    """
    n = level.shape[0] - 1
    paths, months = out.shape
    scale = 0.0 if mean_block <= 1.0 else -1.0 / math.log(1.0 - 1.0 / mean_block)
    for i in range(paths):
        m, left, acc = 0, per_month, 1.0
        while m < months:
            start = min(int(rng.random() * n), n - 1)
            length = 1 + int(rng.standard_exponential() * scale)
            while length > 0 and m < months:
                take = min(length, left)
                end = start + take
                if end <= n:
                    acc *= level[end] / level[start]
                else:
                    end -= n
                    acc *= level[n] / level[start] * level[end]
                start = end if end < n else 0
                length -= take
                left -= take
                if left == 0:
                    out[i, m] = acc
                    m, left, acc = m + 1, per_month, 1.0


def monthly_growth(returns: np.ndarray, months: int, paths: int, block_length: float, seed: int,
                   threads: int | None = None) -> np.ndarray:  # fmt: skip
    """(paths, months) monthly growth factors by stationary block bootstrap of daily simple returns.

    Paths come in chunks of ``CHUNK``, chunk j drawn from the j-th child of ``SeedSequence(seed)``:
    the same paths whatever the number of ``threads`` (the kernel releases the GIL, so chunks run in
    parallel), and more paths only add chunks. Default threads: the CPUs this process may use, at most 4.
    """
    cum_log = np.concatenate([[0.0], np.cumsum(np.log1p(np.asarray(returns, dtype=float)))])
    if np.abs(cum_log).max() > 600:  # the growth index would leave float64's range
        raise PlanError("the returns compound beyond floating point's range over their window")
    level, out = np.exp(cum_log), np.empty((paths, months))
    seeds = np.random.SeedSequence(seed).spawn(-(-paths // CHUNK))

    def fill(j: int) -> None:
        rows = out[j * CHUNK : (j + 1) * CHUNK]
        _monthly_growth(level, rows, TRADING_DAYS_PER_MONTH, float(block_length), np.random.default_rng(seeds[j]))

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = threads or min(4, usable)
    if threads == 1 or len(seeds) == 1:
        for j in range(len(seeds)):
            fill(j)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, range(len(seeds))))
    return out


@numba.njit(cache=True, nogil=True)
def _grown(growth: np.ndarray, initial: float, checkpoints: np.ndarray):
    """Per path, at each checkpoint month: A, the initial wealth grown, and B, one unit paid at
    every month's end, grown (wealth with contribution c is A + c * B). ``checkpoints`` ascending."""
    paths = growth.shape[0]
    k = checkpoints.shape[0]
    a_out, b_out = np.empty((paths, k)), np.empty((paths, k))
    for i in range(paths):
        a, b, j = initial, 0.0, 0
        while j < k and checkpoints[j] == 0:
            a_out[i, j], b_out[i, j] = a, b
            j += 1
        for m in range(growth.shape[1]):
            if j == k:
                break
            g = growth[i, m]
            a, b = a * g, b * g + 1.0
            while j < k and checkpoints[j] == m + 1:
                a_out[i, j], b_out[i, j] = a, b
                j += 1
    return a_out, b_out


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a binomial proportion (sound at 0 and n successes too)."""
    p, z2 = successes / n, Z_95**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paths_needed(target: float, paths: int) -> int:
    """How many of ``paths`` must reach the goal for ``target``: ceil(target * paths), less a rounding
    hair (0.7 * 10_000 is 7000.000000000001 in floating point, and 7000 paths are 70%)."""
    return max(1, math.ceil(target * paths - 1e-9))


def required_contribution(a: np.ndarray, b: np.ndarray, goal: float, target: float) -> float:
    """The smallest c >= 0 with mean(a + c * b >= goal) >= target, exactly on these paths (b > 0)."""
    need = (goal - a) / b  # per path: the contribution from which it reaches the goal
    k = paths_needed(target, len(need))
    c = float(np.partition(need, k - 1)[k - 1])
    # One part in 1e12 up: a + c * b rounds to the goal or just under it on the k-th path.
    return max(0.0, c * (1 + 1e-12))


def plan(history: ReturnHistory, spec: PlanSpec, search_years: int = SEARCH_YEARS) -> PlanResult:
    """The plan ``spec`` asks for, on ``history``'s returns. ``search_years``: how far the years needed
    are looked for (the paths are that long at least); 0 looks at today only and keeps the paths to
    the horizon's length (tests with many paths and a short horizon)."""
    horizon = spec.months
    months = max(horizon, 12 * search_years)
    growth = monthly_growth(history.returns, months, spec.paths, spec.block_length, spec.seed)
    years = np.arange(0, months // 12 + 1) * 12
    checkpoints = np.unique(np.append(years, horizon))
    a, b = _grown(growth, float(spec.initial_wealth), checkpoints)
    at = {int(m): j for j, m in enumerate(checkpoints)}
    c = spec.monthly_contribution

    def wealth(month: int) -> np.ndarray:
        return a[:, at[month]] + c * b[:, at[month]]

    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise PlanError(f"{history.strategy}: wealth overflows over {months} months; plan a shorter horizon")
    terminal = wealth(horizon)
    reached = int(np.count_nonzero(terminal >= spec.goal))
    fan_months = [int(m) for m in checkpoints if m <= horizon]
    bands = np.percentile(np.stack([wealth(m) for m in fan_months], axis=1), PERCENTILES, axis=0)
    fan = [FanBand(year=m / 12, **_named(bands[:, j])) for j, m in enumerate(fan_months)]
    needed = required_contribution(a[:, at[horizon]], b[:, at[horizon]], spec.goal, spec.target_probability)
    reachable = needed <= spec.contribution_cap
    k = paths_needed(spec.target_probability, spec.paths)
    years_needed = next(
        (y for y in range(0, search_years + 1) if np.count_nonzero(wealth(12 * y) >= spec.goal) >= k), None
    )
    provenance = Provenance(strategy=history.strategy, data_start=history.start, data_end=history.end,
                            days=len(history.returns), paths=spec.paths, block_length=spec.block_length,
                            seed=spec.seed, months=horizon)  # fmt: skip
    return PlanResult(
        probability=reached / spec.paths,
        probability_ci=wilson(reached, spec.paths),
        terminal_wealth=Percentiles(**_named(np.percentile(terminal, PERCENTILES))),
        fan=fan,
        target_probability=spec.target_probability,
        required_monthly_contribution=needed if reachable else None,
        reachable=reachable,
        contribution_cap=spec.contribution_cap,
        years_needed=years_needed,
        provenance=provenance,
        caveat=caveat(history, horizon),
    )


def caveat(history: ReturnHistory, months: int) -> str:
    span = len(history.returns) / 252
    return (
        f"These paths resample {len(history.returns)} trading days (about {span:.1f} years, {history.start} to "
        f"{history.end}) of {history.strategy}'s backtested net returns to cover {months / 12:g} years. A few years "
        "of history stand in for decades: regimes they did not see (a longer bear market, higher inflation, other "
        "rates) are missing, and backtested returns are not a promise. The interval is Monte Carlo error only; "
        "it does not include this uncertainty."
    )


def _named(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(v) for q, v in zip(PERCENTILES, values, strict=True)}
