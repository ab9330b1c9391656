"""The backtest engine, the baselines and the performance measures."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import skfolio.measures as sk
from skfolio.optimization import HierarchicalRiskParity, MeanRisk
from sklearn.covariance import ledoit_wolf

from rayfolio.data.conventions import CASH
from rayfolio.data.schema import PanelValidationError
from rayfolio.rl import measures
from rayfolio.rl.agents import AgentAllocator
from rayfolio.rl.backtest import rebalance_dates, run_backtest, simulate
from rayfolio.rl.baselines import (
    BuyAndHold,
    CovarianceHRP,
    EqualWeight,
    TopKForecast,
    hierarchical_risk_parity,
    maximum_sharpe,
    minimum_variance,
    shrunk_prior,
)
from rayfolio.rl.config import BacktestConfig
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.report import write_backtest
from rayfolio.rl.stage import index_returns, index_run
from tests.rl.conftest import SMALL_ENV, hand_market


def test_equal_weight_against_a_hand_computed_path():
    """Two assets, rebalanced every 2 days at 10 bps, figures worked by hand.

    Day 0 close: cash -> (0.5, 0.5): turnover 1, cost 0.001.
    Day 1: returns +10%, -10%: gross 1.0, net 0.999 -> day-1 return -0.001; weights drift to (0.55, 0.45).
    Day 2: returns 0, +20%: gross 0.55 + 0.54 = 1.09 -> return 0.09; weights (0.55/1.09, 0.54/1.09).
    Day 2 close: back to (0.5, 0.5): turnover |0.5 - 0.504587| + |0.5 - 0.495413| = 0.0091743, cost 9.1743e-6.
    Day 3: returns -5%, +5%: gross 1.0 -> return (1 - 9.1743e-6) - 1.
    """
    returns = np.array([[0.0, 0.0], [0.10, -0.10], [0.0, 0.20], [-0.05, 0.05]])
    m = hand_market(returns)
    run = simulate(EqualWeight(m, 2), m.returns, m.dates, m.symbols, np.array([0, 2]), 3, cost_bps=10)
    np.testing.assert_allclose(run.returns.to_numpy(), [-0.001, 0.09, -9.174311926605e-6], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(run.turnover.to_numpy(), [1.0, 0.0091743119266055], rtol=1e-9)
    np.testing.assert_allclose(run.costs.to_numpy(), [0.001, 0.0, 9.174311926605e-6], rtol=1e-9)
    assert list(run.weights.columns) == ["A0", "A1", CASH]
    assert list(run.returns.index) == list(pd.DatetimeIndex(m.dates[1:4]))


def test_agent_backtest_matches_its_evaluation_episode(small_market):
    """The engine's daily account and the environment's k-day steps agree."""

    class Policy:  # a fixed, deterministic function of the observation
        def predict(self, obs, deterministic=True):
            return np.tanh(obs[-12:-6] * 3 + obs[:6]).astype(np.float32), None

    period = small_market.splits["validation"]
    allocator = AgentAllocator("fixed", Policy(), small_market, SMALL_ENV, period)
    first = max(period[0], SMALL_ENV.window - 1)
    decisions = rebalance_dates(first, period[1], SMALL_ENV.rebalance_every)
    run = simulate(allocator, small_market.returns, small_market.dates, small_market.symbols, decisions, period[1],
                   SMALL_ENV.cost_bps)  # fmt: skip
    env = PortfolioEnv(small_market, SMALL_ENV, period, random_start=False)
    obs, _ = env.reset()
    total, done, steps = 0.0, False, 0
    while not done:
        obs, reward, terminated, truncated, info = env.step(Policy().predict(obs)[0])
        total, done, steps = total + reward, terminated or truncated, steps + 1
    held_to = info["date_index"] + SMALL_ENV.rebalance_every
    growth = np.prod(1 + run.returns[: pd.Timestamp(small_market.dates[held_to])].to_numpy())
    assert total == pytest.approx(math.log(growth), rel=1e-9)
    assert len(run.turnover) >= steps


def test_every_strategy_trades_on_the_same_calendar(small_market):
    k, period = SMALL_ENV.rebalance_every, small_market.splits["test"]
    allocators = [EqualWeight(small_market, k), minimum_variance(small_market, k, 60), hrp := hierarchical_risk_parity(
        small_market, k, 60)]  # fmt: skip
    runs = run_backtest(allocators, small_market, period, k, 10.0)
    expected = pd.DatetimeIndex(small_market.dates[rebalance_dates(period[0], period[1], k)])
    for run in runs.values():
        assert run.weights.index.equals(expected)
        np.testing.assert_allclose(run.weights.sum(axis=1), 1.0)
        assert (run.weights >= -1e-12).all().all()
        assert run.returns.index.equals(pd.DatetimeIndex(small_market.dates[period[0] + 1 : period[1] + 1]))
    assert not hrp.failures


@pytest.mark.parametrize("make", [minimum_variance, maximum_sharpe, hierarchical_risk_parity])
def test_estimators_see_only_the_past(small_market, make):
    """Scramble every return after t: the weights decided at t do not move."""
    t = small_market.splits["test"][0] + 7
    before = make(small_market, 5, 60).decide(t, np.eye(small_market.n_assets + 1)[-1])
    returns = small_market.returns.copy()
    returns[t + 1 :] = np.random.default_rng(0).normal(0, 0.1, returns[t + 1 :].shape)
    after = make(dataclasses.replace(small_market, returns=returns), 5, 60).decide(t, np.eye(6)[-1])
    np.testing.assert_allclose(before, after, atol=1e-7)
    changed = small_market.returns.copy()
    changed[t - 3] += 0.05  # the past does move them
    moved = make(dataclasses.replace(small_market, returns=changed), 5, 60).decide(t, np.eye(6)[-1])
    assert not np.allclose(before, moved, atol=1e-6)


def test_minimum_variance_matches_a_closed_form_on_uncorrelated_assets():
    """Nearly independent assets: no weight is at its bound, so the minimum-variance weights are
    Sigma^-1 1 / 1' Sigma^-1 1, Sigma the Ledoit-Wolf covariance of the lookback (scikit-learn's, an
    independent implementation); nearly 1 / variance, pulled towards equal weights by the shrinkage."""
    rng = np.random.default_rng(0)
    vols = np.array([0.01, 0.02, 0.04])
    z = rng.normal(size=(400, 3))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T)).T)  # uncorrelated sample
    m = hand_market(z * vols)
    w = minimum_variance(m, 1, 300).decide(350, np.eye(4)[-1])
    inverse = np.linalg.solve(ledoit_wolf(m.returns[51:351])[0], np.ones(3))
    np.testing.assert_allclose(w[:3], inverse / inverse.sum(), atol=1e-5)
    assert w[3] == pytest.approx(0.0, abs=1e-9)


def test_covariance_hrp_gives_skfolio_hrp_weights():
    """The HRP baseline reads cluster variances off the covariance; skfolio's own HRP (one Portfolio
    per cluster) on the same prior gives the same weights."""
    rng = np.random.default_rng(3)
    returns = rng.normal(0, 0.01, (60, 12)) + rng.normal(0, 0.01, (60, 3)).repeat(4, axis=1)  # 3 blocks
    history = pd.DataFrame(returns, columns=[f"S{i}" for i in range(12)])
    ours = CovarianceHRP(shrunk_prior()).fit(history).weights_
    theirs = HierarchicalRiskParity(prior_estimator=shrunk_prior()).fit(history).weights_
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert not np.allclose(ours, 1 / 12, atol=1e-3)  # not trivially equal weights


def test_a_failed_refit_keeps_the_weights_and_is_listed(small_market):
    """A fit that raises keeps the current weights (decide returns None) and is listed by date."""
    k, period = SMALL_ENV.rebalance_every, small_market.splits["test"]
    failing = minimum_variance(small_market, k, 60)
    failing.make = lambda: MeanRisk(max_weights=0.01)  # infeasible: five assets at 1% cannot be fully invested
    assert failing.decide(period[0], np.eye(small_market.n_assets + 1)[-1]) is None
    assert len(failing.failures) == 1 and str(small_market.dates[period[0]]) in failing.failures[0]
    run = run_backtest([failing], small_market, period, k, 10.0)[failing.name]
    assert run.weights.empty and (run.returns == 0).all()  # never left cash


def test_top_k_holds_the_best_forecasts_and_index_buys_once():
    returns = np.random.default_rng(3).normal(0, 0.01, (30, 4))
    m = hand_market(returns)
    scores = np.tile([0.1, 0.5, np.nan, 0.3], (30, 1))
    w = TopKForecast(m, scores, 2, 5).decide(10, np.eye(5)[-1])
    np.testing.assert_allclose(w, [0, 0.5, 0, 0.5, 0])
    index = np.random.default_rng(4).normal(0, 0.01, 30)
    run = simulate(BuyAndHold(), index[:, None], m.dates, np.array(["INDEX"]), np.array([0, 5, 10]), 29, 10.0)
    assert len(run.turnover) == 1 and run.costs.sum() == pytest.approx(0.001)
    assert np.prod(1 + run.returns.to_numpy()) == pytest.approx(0.999 * np.prod(1 + index[1:30]))


def test_measures_against_skfolio():
    r = np.random.default_rng(0).standard_t(4, 1500) * 0.01 + 0.0003
    assert measures.value_at_risk(r) == pytest.approx(sk.value_at_risk(r, beta=0.95), rel=1e-12)
    assert measures.conditional_value_at_risk(r) == pytest.approx(sk.cvar(r, beta=0.95), rel=1e-12)
    assert measures.max_drawdown(r) == pytest.approx(sk.max_drawdown(sk.get_drawdowns(r, compounded=True)), rel=1e-12)
    sortino = r.mean() / sk.semi_deviation(r, min_acceptable_return=0.0) * math.sqrt(252)
    assert measures.sortino(r) == pytest.approx(sortino, rel=1e-12)
    assert measures.sharpe(r) == pytest.approx(sk.mean(r) / sk.standard_deviation(r) * math.sqrt(252), rel=1e-12)
    growth = np.prod(1 + r)
    assert measures.annual_return(r) == pytest.approx(growth ** (252 / 1500) - 1, rel=1e-12)
    for n in (7, 20, 100, 101):  # the discrete tail definitions at awkward sizes
        x = np.random.default_rng(n).normal(size=n)
        assert measures.value_at_risk(x) == pytest.approx(sk.value_at_risk(x), rel=1e-12)
        assert measures.conditional_value_at_risk(x) == pytest.approx(sk.cvar(x), rel=1e-12)


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_data():
    rng = np.random.default_rng(1)
    short, long = rng.normal(0.0005, 0.01, 250), rng.normal(0.0005, 0.01, 5000)
    lo_s, hi_s = measures.bootstrap_sharpe_interval(short, 1000, 10, 0)
    lo_l, hi_l = measures.bootstrap_sharpe_interval(long, 1000, 10, 0)
    assert lo_s < measures.sharpe(short) < hi_s and lo_l < measures.sharpe(long) < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert lo_l < 0.0005 / 0.01 * math.sqrt(252) < hi_l  # covers the true Sharpe (0.79)
    assert measures.bootstrap_sharpe_interval(short, 1000, 10, 0) == (lo_s, hi_s)  # seeded


def test_backtest_output_files(small_market, tmp_path):
    k, period = SMALL_ENV.rebalance_every, small_market.splits["test"]
    runs = run_backtest([EqualWeight(small_market, k), minimum_variance(small_market, k, 60)], small_market, period, k,
                        10.0)  # fmt: skip
    result = write_backtest(runs, BacktestConfig(bootstrap_samples=200), tmp_path)
    metrics = pd.read_json(tmp_path / "metrics.json", orient="index")
    assert set(metrics.index) == {"equal_weight", "min_variance"}
    expected = {"annual_return", "volatility", "sharpe", "sortino", "calmar", "max_drawdown", "var_95", "cvar_95",
                "turnover", "costs_paid", "information_ratio", "sharpe_ci_low", "sharpe_ci_high"}  # fmt: skip
    assert expected <= set(metrics.columns)
    returns = pd.read_parquet(tmp_path / "returns.parquet")
    assert list(returns.columns) == ["equal_weight", "min_variance"] and returns.index.name == "date"
    assert metrics.loc["equal_weight", "sharpe"] == pytest.approx(measures.sharpe(returns["equal_weight"].to_numpy()))
    ir = measures.sharpe((returns["min_variance"] - returns["equal_weight"]).to_numpy())
    assert metrics.loc["min_variance", "information_ratio"] == pytest.approx(ir)
    weights = pd.read_parquet(tmp_path / "weights.parquet")
    assert list(weights.columns) == ["date", "strategy", "symbol", "weight"]
    np.testing.assert_allclose(weights.groupby(["strategy", "date"])["weight"].sum(), 1.0)
    for plot in result.plots:
        assert plot.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*partial"))


def test_index_file_gives_daily_returns_and_bad_ones_are_refused_by_name(tmp_path):
    market = hand_market(np.zeros((6, 2)))
    good = tmp_path / "index.csv"
    good.write_text("date,level\n2019-12-31,100\n2020-01-01,100\n2020-01-02,110\n2020-01-04,99\n")
    returns = index_returns(str(good), "csv", market)  # 2020-01-03 missing: the level carries over
    np.testing.assert_allclose(returns[1:], [0.1, 0.0, -0.1, 0.0, 0.0])
    cases = {
        "missing.csv": (None, "no such index file"),
        "three.csv": ("date,a,b\n2020-01-01,1,2\n", "an index file has two columns, 'date' and the index level"),
        "negative.csv": ("date,level\n2020-01-01,-1\n", "index levels must be positive numbers"),
        "text.csv": ("date,level\n2020-01-01,high\n", "dates and index levels must parse"),
    }
    for name, (text, message) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(PanelValidationError, match=f"^{re.escape(str(tmp_path / name))}: {message}"):
            index_returns(str(tmp_path / name), "csv", market)
    short = tmp_path / "short.csv"
    short.write_text("date,level\n2020-01-03,100\n2020-01-04,101\n")
    with pytest.raises(PanelValidationError, match="does not cover the whole test period"):
        index_run(str(short), "csv", market, (0, 5), 1, 10.0)
