"""Goal planning's Monte Carlo (rl/planning.py) against closed forms: the annuity formula with a
constant return, the lognormal law of terminal wealth with i.i.d. lognormal returns; common random
numbers (monotone in the contribution, the same paths for every horizon); determinism."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from rayfolio.rl.planning import (
    PlanError,
    PlanSpec,
    ReturnHistory,
    load_histories,
    monthly_growth,
    plan,
    wilson,
)

START, END = dt.date(2017, 1, 2), dt.date(2022, 12, 30)


def history(returns: np.ndarray, name: str = "synthetic") -> ReturnHistory:
    return ReturnHistory(name, START, END, np.asarray(returns, dtype=float))


# A strategy with fat tails and volatility clusters, the kind of history the planner resamples.
RNG = np.random.default_rng(7)
VOLATILE = history(0.0006 + 0.01 * RNG.standard_t(4, 1500) * np.repeat(RNG.uniform(0.5, 1.5, 30), 50))


def test_required_contribution_with_a_constant_return_is_the_annuity_formula():
    r, initial, goal, years = 0.0003, 10_000.0, 250_000.0, 15
    g, months = (1 + r) ** 21, 12 * years  # every month is 21 days at r, whatever the bootstrap draws
    annuity = (g**months - 1) / (g - 1)  # one unit paid at each month's end, grown to the horizon
    expected = (goal - initial * g**months) / annuity
    flat = history(np.full(300, r))
    out = plan(flat, PlanSpec(initial_wealth=initial, goal=goal, horizon_years=years, paths=200, seed=3))
    assert out.required_monthly_contribution == pytest.approx(expected, rel=1e-6) and out.reachable
    assert out.probability == 0.0  # no contribution: 10,000 grows to ~21,000, far from the goal
    # Deterministic paths: the goal is reached exactly from the annuity's contribution on.
    above = plan(flat, PlanSpec(initial_wealth=initial, goal=goal, horizon_years=years, paths=200,
                                monthly_contribution=expected * (1 + 1e-9)))  # fmt: skip
    below = plan(flat, PlanSpec(initial_wealth=initial, goal=goal, horizon_years=years, paths=200,
                                monthly_contribution=expected * (1 - 1e-6)))  # fmt: skip
    assert (above.probability, below.probability) == (1.0, 0.0)
    # Years needed at half that contribution: the first whole year whose annuity reaches the goal.
    half = expected / 2
    wealth = [initial * g ** (12 * y) + half * (g ** (12 * y) - 1) / (g - 1) for y in range(41)]
    at_half = plan(flat, PlanSpec(initial_wealth=initial, goal=goal, horizon_years=years, paths=200,
                                  monthly_contribution=half))  # fmt: skip
    assert at_half.years_needed == next(y for y, w in enumerate(wealth) if w >= goal) > years
    assert at_half.fan[5].p5 == pytest.approx(wealth[5], rel=1e-9) == at_half.fan[5].p95


@pytest.mark.parametrize("block_length", [1.0, 21.0])
def test_with_iid_lognormal_returns_the_probability_is_the_lognormal_closed_form(block_length):
    """Terminal log wealth is a sum of 252 days drawn from the history: normal with the mean and
    variance of the history's daily log returns (the distribution the bootstrap draws from) times
    252 (12 months of 21 days). Blocks of an i.i.d. history are i.i.d. too, so both block lengths
    must match it; 100,000 paths put the Monte Carlo error near 0.0015."""
    rng = np.random.default_rng(11)
    log_returns = rng.normal(0.0003, 0.01, 100_000)
    returns = np.expm1(log_returns)
    used = np.log1p(returns)  # what the planner compounds
    days = 21 * 12
    mean, sd = days * used.mean(), math.sqrt(days * used.var())
    initial = 1000.0
    goal = initial * math.exp(mean + 0.5 * sd)  # closed form: 1 - Phi(0.5) = 0.3085
    spec = PlanSpec(initial_wealth=initial, goal=goal, horizon_years=1, paths=100_000, block_length=block_length,
                    seed=5)  # fmt: skip
    out = plan(history(returns), spec, search_years=0)
    closed = 1 - norm.cdf((math.log(goal / initial) - mean) / sd)
    assert abs(out.probability - closed) < 0.005, (out.probability, closed)
    tw = out.terminal_wealth
    assert tw.p50 == pytest.approx(initial * math.exp(mean), rel=0.003)
    assert tw.p5 == pytest.approx(initial * math.exp(mean + norm.ppf(0.05) * sd), rel=0.005)
    assert tw.p95 == pytest.approx(initial * math.exp(mean + norm.ppf(0.95) * sd), rel=0.005)
    lo, hi = out.probability_ci
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(closed * (1 - closed) / 100_000), rel=0.02)


def test_the_same_seed_gives_the_same_plan_on_any_number_of_threads():
    spec = PlanSpec(initial_wealth=20_000, goal=100_000, horizon_years=10, monthly_contribution=300, paths=3000)
    assert plan(VOLATILE, spec) == plan(VOLATILE, spec)
    assert plan(VOLATILE, spec.model_copy(update={"seed": 1})).probability != plan(VOLATILE, spec).probability
    one = monthly_growth(VOLATILE.returns, 120, 3000, 21.0, seed=9, threads=1)
    assert np.array_equal(one, monthly_growth(VOLATILE.returns, 120, 3000, 21.0, seed=9, threads=3))
    # More paths add paths: the first 1,024 (one random stream) are the same ones.
    assert np.array_equal(one[:1024], monthly_growth(VOLATILE.returns, 120, 1024, 21.0, seed=9))


def test_long_blocks_replay_the_history_and_one_day_blocks_shuffle_it():
    """One-day blocks: a month is 21 independent draws (spread sqrt(21) x the daily one). Long blocks:
    a month is 21 consecutive days of the history (the spread of its circular 21-day windows, which
    its serial dependence sets), and consecutive months of a path follow its slow swings."""
    days = np.random.default_rng(2).normal(0, 0.01, 2000)
    logs = np.log1p(days)
    cum = np.concatenate([[0.0], np.cumsum(np.r_[logs, logs[:21]])])
    windows = cum[21:2021] - cum[:2000]
    assert np.log(monthly_growth(days, 480, 1000, 1.0, seed=1)).std() == pytest.approx(math.sqrt(21) * logs.std(),
                                                                                        rel=0.02)  # fmt: skip
    assert np.log(monthly_growth(days, 480, 1000, 1000.0, seed=1)).std() == pytest.approx(windows.std(), rel=0.02)
    assert windows.std() < 0.9 * math.sqrt(21) * logs.std()  # this history's 21-day windows differ from 21 draws

    def lag1(growth: np.ndarray) -> float:
        x = np.log(growth)
        return float(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1])

    swing = np.sin(np.arange(2000) / 100) * 0.01  # a cycle of ~630 days
    assert lag1(monthly_growth(swing, 240, 500, 1.0, seed=1)) == pytest.approx(0, abs=0.02)
    assert lag1(monthly_growth(swing, 240, 500, 252.0, seed=1)) > 0.5


CONTRIBUTIONS = st.floats(0, 3000, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(c1=CONTRIBUTIONS, c2=CONTRIBUTIONS, goal=st.floats(1_000, 2_000_000), months=st.integers(1, 240),
       target=st.floats(0.05, 0.95), seed=st.integers(0, 3))  # fmt: skip
def test_the_probability_never_falls_as_the_contribution_grows(c1, c2, goal, months, target, seed):
    low, high = sorted((c1, c2))
    spec = PlanSpec(initial_wealth=10_000, goal=goal, horizon_years=months / 12, paths=300, target_probability=target,
                    seed=seed)  # fmt: skip

    def at(contribution: float):
        return plan(VOLATILE, spec.model_copy(update={"monthly_contribution": contribution}), search_years=0)

    assert at(high).probability >= at(low).probability
    # The contribution needed is exact on these paths: at it the target is met, a hair below it is not.
    needed = at(low).required_monthly_contribution
    assert needed is not None and needed == at(high).required_monthly_contribution
    assert at(needed).probability >= target - 1e-9  # paths_needed forgives a rounding hair (0.05 vs 0.05 + 1e-17)
    if needed > 1e-6:
        assert at(needed * (1 - 1e-6)).probability < target


def test_every_horizon_reads_the_same_paths_and_the_years_needed_agree_with_them():
    """Common random numbers over horizons: a 5-year plan's fan is the first years of a 20-year plan's,
    and the years needed are where the horizon's probability first reaches the target."""
    spec = PlanSpec(initial_wealth=10_000, goal=30_000, horizon_years=5, monthly_contribution=200, paths=2000)
    five, twenty = plan(VOLATILE, spec), plan(VOLATILE, spec.model_copy(update={"horizon_years": 20}))
    assert five.fan == twenty.fan[:6]
    y = twenty.years_needed
    assert y is not None and y >= 2
    at = lambda years: plan(VOLATILE, spec.model_copy(update={"horizon_years": years})).probability  # noqa: E731
    assert at(y) >= spec.target_probability > at(y - 1)


def test_the_probability_at_the_horizon_can_fall_as_the_horizon_grows():
    """Why the planner claims monotonicity in the contribution only: a goal below today's wealth is
    almost sure next month and less so in twenty years, on the very same paths."""
    spec = PlanSpec(initial_wealth=100_000, goal=90_000, horizon_years=1 / 12, paths=2000)
    month, decades = plan(VOLATILE, spec), plan(VOLATILE, spec.model_copy(update={"horizon_years": 20}))
    assert month.probability > decades.probability
    assert month.years_needed == 0  # already there today


def test_a_contribution_cap_below_the_need_is_unreachable_and_the_default_cap_never_binds():
    spec = PlanSpec(initial_wealth=0, goal=1_000_000, horizon_years=2, paths=500, target_probability=0.95)
    default = plan(VOLATILE, spec)
    assert default.reachable and default.contribution_cap == 1_000_000
    assert 1_000_000 / 24 * 0.8 < default.required_monthly_contribution < 1_000_000
    capped = plan(VOLATILE, spec.model_copy(update={"max_monthly_contribution": 10_000}))
    assert (capped.reachable, capped.required_monthly_contribution, capped.contribution_cap) == (False, None, 10_000)
    assert capped.probability == default.probability  # the cap changes the answer to the question, not the paths


@pytest.mark.parametrize(("successes", "n"), [(0, 10), (5, 10), (10, 10), (8123, 10_000), (1, 100_000)])
def test_the_interval_is_wilsons(successes, n):
    assert wilson(successes, n) == pytest.approx(proportion_confint(successes, n, alpha=0.05, method="wilson"))


def test_fractional_horizons_round_to_months_and_end_the_fan():
    out = plan(VOLATILE, PlanSpec(initial_wealth=1000, goal=2000, horizon_years=2.5, paths=200))
    assert out.provenance.months == 30 and [b.year for b in out.fan] == [0, 1, 2, 2.5]
    assert out.fan[-1].p50 == out.terminal_wealth.p50 and out.fan[0].p5 == out.fan[0].p95 == 1000


def test_histories_come_from_a_backtests_returns_with_the_profiles_named(tmp_path):
    dates = pd.bdate_range("2020-01-01", periods=200)
    frame = pd.DataFrame({"served_balanced": 0.001, "equal_weight": 0.0005, "late": np.nan}, index=dates)
    frame.loc[dates[100] :, "late"] = 0.002  # starts later than the others: its own window, NaNs dropped
    frame.index.name = "date"
    frame.to_parquet(tmp_path / "returns.parquet")
    loaded = load_histories(tmp_path / "returns.parquet")
    assert set(loaded) == {"served_balanced", "balanced", "equal_weight", "late"}
    assert loaded["balanced"] is loaded["served_balanced"] and loaded["balanced"].strategy == "served_balanced"
    assert (loaded["late"].start, len(loaded["late"].returns)) == (dates[100].date(), 100)
    with pytest.raises(PlanError, match="at least 63"):
        history(np.zeros(10))
    with pytest.raises(PlanError, match="above -100%"):
        history(np.r_[np.zeros(100), -1.0])
