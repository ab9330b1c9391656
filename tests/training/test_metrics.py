"""Forecast metrics against per-date scipy loops, identities and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from rayfolio.training import metrics as m


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(0)
    label = rng.normal(size=(60, 12))
    pred = 0.3 * label + rng.normal(size=(60, 12))
    pred[rng.random(pred.shape) < 0.1] = np.nan  # missing predictions
    label[5, :] = np.nan  # a date with no labels
    return pred, label


def test_daily_ic_and_rank_ic_match_scipy_per_date(panel):
    pred, label = panel
    ic, ric = m.daily_ic(pred, label), m.daily_rank_ic(pred, label)
    for t in range(len(pred)):
        ok = np.isfinite(pred[t]) & np.isfinite(label[t])
        if ok.sum() < 3:
            assert np.isnan(ic[t]) and np.isnan(ric[t])
            continue
        assert ic[t] == pytest.approx(stats.pearsonr(pred[t, ok], label[t, ok])[0], abs=1e-12)
        assert ric[t] == pytest.approx(stats.spearmanr(pred[t, ok], label[t, ok])[0], abs=1e-12)


def test_identities(panel):
    _, label = panel
    assert np.nanmean(m.daily_rank_ic(label, label)) == pytest.approx(1.0)
    assert np.nanmean(m.daily_ic(-label, label)) == pytest.approx(-1.0)
    assert m.hit_rate(label, label) == 1.0
    assert m.top_k_precision(label, label) == 1.0
    # A monotone transform leaves Rank IC unchanged.
    np.testing.assert_allclose(m.daily_rank_ic(np.exp(label), label), m.daily_rank_ic(label, label))


def test_long_short_weights_and_costs():
    signal = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    w = m.long_short_weights(signal, fraction=0.2)
    np.testing.assert_allclose(w, [[-1, 0, 0, 0, 1], [1, 0, 0, 0, -1]])
    next_returns = np.array([[0.0, 0.0, 0.0, 0.0, 0.01], [0.02, 0.0, 0.0, 0.0, 0.0]])
    net = m.long_short_returns(signal, next_returns, cost_bps=10)
    # Day 0: +1% gross, turnover 2 (from cash). Day 1: +2% gross, full flip = turnover 4.
    np.testing.assert_allclose(net, [0.01 - 2 * 0.001, 0.02 - 4 * 0.001])
    # An unchanged portfolio pays nothing after the first day.
    steady = m.long_short_returns(np.tile(signal[:1], (3, 1)), np.zeros((3, 5)), cost_bps=10)
    np.testing.assert_allclose(steady, [-0.002, 0.0, 0.0])


def test_sharpe_and_psr_against_direct_formulas():
    rng = np.random.default_rng(1)
    r = rng.normal(0.001, 0.01, 500)
    assert m.sharpe(r) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    expected = stats.norm.cdf(sr * math.sqrt(499) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert m.probabilistic_sharpe(r) == pytest.approx(expected)


def test_deflated_sharpe_is_psr_for_one_trial_and_falls_with_more_trials():
    rng = np.random.default_rng(2)
    r = rng.normal(0.0008, 0.01, 750)
    assert m.deflated_sharpe(r, np.array([0.05])) == pytest.approx(m.probabilistic_sharpe(r, 0.0))
    few = m.deflated_sharpe(r, rng.normal(0, 0.02, 5))
    many = m.deflated_sharpe(r, rng.normal(0, 0.02, 200))
    assert many < few < m.probabilistic_sharpe(r)


def test_expected_max_sharpe_matches_monte_carlo():
    """E[max of N normal SRs] from the closed form vs simulation."""
    rng = np.random.default_rng(3)
    n, spread = 50, 0.03
    trials = rng.normal(0, spread, n)
    formula = m.expected_max_sharpe(trials)
    simulated = rng.normal(0, math.sqrt(trials.var(ddof=1)), (20000, n)).max(axis=1).mean()
    assert formula == pytest.approx(simulated, rel=0.05)
