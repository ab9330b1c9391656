"""Significance tests against statsmodels' HAC, exact hand sums, the classical t-test, and their
behaviour under the null (rejection rates near the nominal 5%)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.sandwich_covariance import S_hac_simple

from rayfolio.training import metrics
from rayfolio.training import significance as sig

ANNUAL = math.sqrt(252)


def _ar1(rng: np.random.Generator, n: int, phi: float, mean: float = 0.0) -> np.ndarray:
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return mean + x


def _statsmodels_hac(y: np.ndarray, lag: int):
    return sm.OLS(y, np.ones(len(y))).fit(cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": True})


@pytest.mark.parametrize("lag", [0, 1, 4, 19])
def test_newey_west_mean_equals_statsmodels_hac(lag):
    x = _ar1(np.random.default_rng(lag), 300, phi=0.6, mean=0.1)
    x[[7, 50, 51, 299]] = np.nan  # dates with no value are dropped
    ref = _statsmodels_hac(x[np.isfinite(x)], lag)
    got = sig.newey_west_mean(x, lag)
    assert (got.n, got.lag) == (296, lag)
    assert got.mean == pytest.approx(ref.params[0], abs=1e-14)
    assert got.se == pytest.approx(ref.bse[0], rel=1e-10)
    assert got.t == pytest.approx(ref.tvalues[0], abs=1e-10)
    assert got.p_two_sided == pytest.approx(ref.pvalues[0], abs=1e-10)
    assert got.p_greater == pytest.approx(stats.norm.sf(ref.tvalues[0]), abs=1e-12)
    assert got.p_greater + got.p_less == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("lag", [0, 3, 10])
def test_paired_difference_equals_statsmodels_on_common_dates(lag):
    rng = np.random.default_rng(10 + lag)
    a, b = _ar1(rng, 250, 0.5, 0.05), _ar1(rng, 250, 0.3)
    a[[3, 4]], b[[4, 100]] = np.nan, np.nan
    both = np.isfinite(a) & np.isfinite(b)
    ref = _statsmodels_hac(a[both] - b[both], lag)
    got = sig.paired_difference(a, b, lag)
    assert got.n == 247
    assert got.t == pytest.approx(ref.tvalues[0], abs=1e-10)
    assert got.se == pytest.approx(ref.bse[0], rel=1e-10)


def test_newey_west_mean_by_exact_hand_sums():
    values = (3, -1, 4, 1, -5, 9)  # percent
    x = [Fraction(v, 100) for v in values]
    n, lag = len(x), 1
    mean = sum(x) / n
    u = [v - mean for v in x]
    gamma0 = sum(v * v for v in u) / n
    gamma1 = sum(u[t] * u[t - 1] for t in range(1, n)) / n
    var = (gamma0 + 2 * (1 - Fraction(1, lag + 1)) * gamma1) * Fraction(n, n - 1) / n
    assert var == Fraction(2099, 10_800_000)  # stored: the sums above, done once by hand
    got = sig.newey_west_mean(np.array(values) / 100, lag)
    assert got.mean == pytest.approx(float(mean), abs=1e-15)
    assert got.se == pytest.approx(math.sqrt(var), abs=1e-12)
    assert got.t == pytest.approx(float(mean) / math.sqrt(var), abs=1e-12)


def test_lag_zero_is_the_classical_one_sample_t_test():
    x = np.random.default_rng(2).normal(0.1, 1.0, size=40)
    got = sig.newey_west_mean(x, 0)
    assert got.se == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)), rel=1e-12)
    assert got.t == pytest.approx(stats.ttest_1samp(x, 0.0).statistic, rel=1e-12)


def test_overlapping_labels_need_hac():
    """Means of overlapping 5-day sums of pure noise (what daily Rank ICs of 5-day labels look
    like): the iid standard error rejects the true null far too often, the HAC one does not."""
    h, n, draws = 5, 500, 200
    rejected = {0: 0, 2 * h: 0}
    rng = np.random.default_rng(3)
    for _ in range(draws):
        x = np.convolve(rng.normal(size=n + h - 1), np.ones(h), "valid")  # (n,)
        for lag in rejected:
            rejected[lag] += sig.newey_west_mean(x, lag).p_two_sided < 0.05
    assert rejected[0] / draws > 0.25
    assert 0.01 <= rejected[2 * h] / draws <= 0.12


def test_too_few_values_give_nan_inference():
    got = sig.newey_west_mean(np.array([0.1, np.nan, 0.3]), 1)
    assert got.n == 2 and got.mean == pytest.approx(0.2)
    assert all(math.isnan(v) for v in (got.se, got.t, got.p_two_sided, got.p_greater, got.p_less))
    assert math.isnan(sig.newey_west_mean(np.full(4, np.nan), 0).mean)
    assert math.isnan(sig.newey_west_mean(np.array([0.1, -0.1]), 0).t)  # a zero mean is no exception
    assert sig.verdict(got) == "no evidence either way"


def test_zero_mean_of_a_constant_series_is_no_evidence():
    got = sig.paired_difference(np.ones(10), np.ones(10), 2)
    assert (got.mean, got.se, got.t, got.p_two_sided) == (0.0, 0.0, 0.0, 1.0)


def _returns(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.normal(size=n)
    a = 0.0006 + 0.01 * (0.6 * common + 0.8 * rng.normal(size=n))
    b = 0.0002 + 0.012 * (0.6 * common + 0.8 * _ar1(rng, n, 0.2) * math.sqrt(1 - 0.04))
    return a, b


@pytest.mark.parametrize("lag", [None, 0, 3, 12])
def test_sharpe_difference_se_equals_sandwich_from_statsmodels(lag):
    a, b = _returns(4)
    a[10], b[20] = np.nan, np.inf  # dropped on both sides
    got = sig.sharpe_difference(a, b, lag=lag)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = len(a)
    mu_a, mu_b, g_a, g_b = a.mean(), b.mean(), (a**2).mean(), (b**2).mean()
    s_a, s_b = a.std(), b.std()
    gradient = np.array([g_a / s_a**3, -g_b / s_b**3, -0.5 * mu_a / s_a**3, 0.5 * mu_b / s_b**3])
    moments = np.column_stack([a - mu_a, b - mu_b, a**2 - g_a, b**2 - g_b])  # (n, 4)
    psi = S_hac_simple(moments, nlags=lag) / (n - 4)  # LW: n / (n - 4) x S / n; nlags=None: the same NW bandwidth
    se = math.sqrt(gradient @ psi @ gradient / n) * ANNUAL
    assert got.n == n == 498
    assert got.lag == (sig.newey_west_lag(n) if lag is None else lag)
    assert got.se == pytest.approx(se, rel=1e-10)
    assert got.sharpe_a == pytest.approx(mu_a / s_a * ANNUAL, rel=1e-12)
    assert got.difference == pytest.approx((mu_a / s_a - mu_b / s_b) * ANNUAL, rel=1e-12)
    assert got.t == pytest.approx(got.difference / se, rel=1e-10)
    assert got.p_two_sided == pytest.approx(2 * stats.norm.sf(abs(got.t)), abs=1e-12)
    # The moments' Sharpe (ddof=0) is the report's Sharpe (ddof=1) times sqrt(n / (n - 1)).
    assert got.sharpe_b == pytest.approx(metrics.sharpe(b) * math.sqrt(n / (n - 1)), rel=1e-12)


def test_newey_west_lag_is_the_usual_bandwidth():
    assert [sig.newey_west_lag(n) for n in (100, 500, 1500, 5000)] == [4, 5, 7, 9]


@pytest.mark.parametrize("method", ["hac", "bootstrap"])
def test_identical_series_show_no_difference(method):
    a, _ = _returns(5)
    got = sig.sharpe_difference(a, a.copy(), method=method, samples=99)
    assert (got.difference, got.t, got.p_two_sided) == (0.0, 0.0, 1.0)
    assert sig.verdict(got) == "no evidence either way"


@pytest.mark.parametrize("method", ["hac", "bootstrap"])
def test_a_clearly_higher_sharpe_beats_and_the_lower_trails(method):
    rng = np.random.default_rng(6)
    a = 0.0005 + 0.01 * rng.normal(size=500)
    b = a - 0.001  # the same noise, 10 bp a day worse
    better = sig.sharpe_difference(a, b, method=method, samples=499)
    worse = sig.sharpe_difference(b, a, method=method, samples=499)
    assert better.difference > 1.0 and better.p_greater < 0.01 and sig.verdict(better) == "beats"
    assert worse.difference == pytest.approx(-better.difference)
    assert worse.p_less < 0.01 and sig.verdict(worse) == "trails"


def test_under_the_null_both_methods_reject_near_the_nominal_rate():
    """Two independent iid series with the same mean and volatility: 5% tests reject ~5%."""
    draws, n = 200, 500
    rejected = {"hac": 0, "bootstrap": 0}
    for seed in range(draws):
        rng = np.random.default_rng(100 + seed)
        a, b = rng.normal(0.0004, 0.01, size=(2, n))
        for method in rejected:
            got = sig.sharpe_difference(a, b, method=method, samples=199, seed=seed)
            rejected[method] += got.p_two_sided < 0.05
    for method, count in rejected.items():
        assert 0.01 <= count / draws <= 0.12, (method, count)


def test_bootstrap_p_values_are_seeded_and_on_their_grid():
    a, b = _returns(7)
    first = sig.sharpe_difference(a, b, method="bootstrap", samples=199, seed=1)
    assert first == sig.sharpe_difference(a, b, method="bootstrap", samples=199, seed=1)
    other = sig.sharpe_difference(a, b, method="bootstrap", samples=199, seed=2)
    assert (first.difference, first.se, first.t) == (other.difference, other.se, other.t)
    for p in (first.p_two_sided, first.p_greater, first.p_less):
        assert 1 / 200 <= p <= 1 and (p * 200) == pytest.approx(round(p * 200))
    assert first.p_greater + first.p_less >= 1  # ties count on both sides


def test_degenerate_sharpe_inputs_give_nan_inference():
    short = sig.sharpe_difference(np.array([0.01, 0.02, -0.01, 0.0]), np.array([0.0, 0.01, 0.02, -0.01]))
    assert short.n == 4 and math.isnan(short.p_two_sided) and not math.isnan(short.sharpe_a)
    cash = sig.sharpe_difference(np.random.default_rng(8).normal(size=50), np.zeros(50))
    assert math.isnan(cash.sharpe_b) and math.isnan(cash.se) and sig.verdict(cash) == "no evidence either way"
    few_blocks = sig.sharpe_difference(*_returns(9, n=15), method="bootstrap", block=10)
    assert math.isnan(few_blocks.p_two_sided)


def test_yearly_signs_known_answers():
    dates = pd.to_datetime(
        ["2019-12-30", "2019-12-31", "2020-01-02", "2020-01-03", "2020-06-01", "2021-03-01", "2022-01-03"]
    ).to_numpy()
    series = np.array([0.1, -0.3, 0.2, 0.0, 0.4, np.nan, -0.2])
    table = sig.yearly_signs(dates, series)
    expected = pd.DataFrame(
        {"days": [2, 3, 1], "mean": [-0.1, 0.2, -0.2], "positive_share": [0.5, 2 / 3, 0.0], "sign": ["-", "+", "-"]},
        index=pd.Index([2019, 2020, 2022], name="year"),
    )
    pd.testing.assert_frame_equal(table, expected, check_dtype=False, check_index_type=False)


def _mean_test(p_greater: float, p_less: float) -> sig.MeanTest:
    return sig.MeanTest(0.0, 1.0, 0.0, min(1.0, 2 * min(p_greater, p_less)), p_greater, p_less, 100, 4)


def test_verdict_rule():
    assert sig.verdict(_mean_test(0.01, 0.99)) == "beats"
    assert sig.verdict(_mean_test(0.99, 0.01)) == "trails"
    assert sig.verdict(_mean_test(0.06, 0.94)) == "no evidence either way"
    assert sig.verdict(_mean_test(0.06, 0.94), alpha=0.1) == "beats"
    assert sig.verdict(_mean_test(0.05, 0.95)) == "no evidence either way"  # strictly below alpha


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sig.paired_difference(np.ones(3), np.ones(4), 1), "lengths 3 and 4"),
        (lambda: sig.newey_west_mean(np.ones(5), -1), "lag must be >= 0, got -1"),
        (lambda: sig.sharpe_difference(np.ones(9), np.ones(9), method="t"), "method must be 'hac' or 'bootstrap'"),
        (lambda: sig.sharpe_difference(np.ones(9), np.ones(9), block=0), "block and samples must be >= 1"),
        (lambda: sig.yearly_signs(np.array(["2020-01-01"], dtype="datetime64[D]"), np.ones(2)), "same length"),
        (lambda: sig.verdict(_mean_test(0.01, 0.99), alpha=0.5), "alpha must be in (0, 0.5)"),
    ],
)
def test_bad_inputs_are_one_clear_error(call, message):
    with pytest.raises(sig.SignificanceError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
