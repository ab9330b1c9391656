"""Drift statistics: PSI against hand-computed values and an independent implementation, KS against
scipy and by hand, ties, constant and empty features, and the calibrated thresholds on 200 seeds of
autocorrelated features: few false alarms without a shift, a 0.5 sigma shift found in one feature only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from scipy.stats import ks_2samp

from rayfolio.data.drift import (
    INSUFFICIENT,
    DriftConfig,
    DriftResult,
    SeriesDrift,
    assess,
    population_stability_index,
    reachable_psi,
    series_drift,
)

FLOOR = 1e-4


def psi_with_pandas_cut(reference: np.ndarray, actual: np.ndarray) -> float:
    """Independent PSI: pandas' right-closed bins on numpy's deciles, shares floored, summed term by term."""
    edges = np.quantile(reference, np.linspace(0.1, 0.9, 9))
    bins = [-np.inf, *edges, np.inf]
    expected = pd.Series(pd.cut(reference, bins, right=True)).value_counts(normalize=True, sort=False).to_numpy()
    observed = pd.Series(pd.cut(actual, bins, right=True)).value_counts(normalize=True, sort=False).to_numpy()
    total = 0.0
    for e, a in zip(np.maximum(expected, FLOOR), np.maximum(observed, FLOOR), strict=True):
        total += (a - e) * np.log(a / e)
    return total


def ks_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """sup |F_x - F_y| over every observed value (the empirical CDFs are steps there)."""
    grid = np.concatenate([x, y])
    fx = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    fy = np.searchsorted(np.sort(y), grid, side="right") / len(y)
    return float(np.abs(fx - fy).max())


def test_psi_by_hand():
    # Reference 1..100: deciles 10.9, 20.8, ..., 90.1, ten values per bin (shares 0.1).
    # Actual: 20 values of 5 (first bin), 30 of 95 (last bin), eight empty bins floored at 1e-4.
    reference = np.arange(1.0, 101.0)
    actual = np.array([5.0] * 20 + [95.0] * 30)
    by_hand = 0.3 * np.log(4) + 0.5 * np.log(6) + 8 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert by_hand == pytest.approx(6.832446061912519, rel=1e-12)
    assert float(population_stability_index(reference, actual)) == pytest.approx(by_hand, rel=1e-12)
    assert float(population_stability_index(reference, reference)) == 0.0


def test_ties_fall_into_the_lower_bin_and_empty_bins_add_nothing():
    # 60 zeros and 1..40: deciles 0, 0, 0, 0, 0, 0.4, 10.3, 20.2, 30.1; bins (0, 0] are empty in both
    # samples (their floored shares are equal: 0), (0, 0.4] too; zeros all in (-inf, 0].
    reference = np.array([0.0] * 60 + list(range(1, 41)), dtype=float)
    actual = np.array([0.0] * 80 + [5.0] * 20)
    by_hand = 0.2 * np.log(0.8 / 0.6) + 0.1 * np.log(2) + 3 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert float(population_stability_index(reference, actual)) == pytest.approx(by_hand, rel=1e-12)


def test_constant_feature_is_stable_until_it_moves_and_never_infinite():
    config = DriftConfig()
    same = series_drift("const", np.full((300, 5), 3.0), np.full((63, 5), 3.0), config)
    assert same.psi == 0.0 and same.ks == 0.0 and same.level == "info"
    moved = series_drift("const", np.full((300, 5), 3.0), np.full((63, 5), 3.5), config)
    # All of the reference in (-inf, 3], all of the window in (3, inf): 2 (1 - 1e-4) ln(1e4).
    assert moved.psi == pytest.approx(2 * (1 - 1e-4) * np.log(1e4), rel=1e-12) and moved.level == "critical"


def test_a_window_beyond_the_reference_reaches_the_largest_psi_and_a_trend_cannot_alarm():
    reference = np.arange(1000.0)
    beyond = float(population_stability_index(reference, np.full(50, 5000.0)))  # all in the last bin
    assert beyond == pytest.approx(0.9 * np.log(10) + 9 * (0.1 - 1e-4) * np.log(0.1 / 1e-4), rel=1e-12)
    assert float(reachable_psi(np.full(10, 100))) == pytest.approx(beyond, rel=1e-12)
    # A trend: every quarter sits in its own bins, far from the rest, so no window can look unusual.
    trend = series_drift("trend", np.arange(1000.0)[:, None] + np.zeros((1, 4)), np.full((63, 4), 500.0), DriftConfig())
    assert trend.thresholds["warning"] > trend.thresholds["largest_reachable_psi"] == pytest.approx(beyond)
    assert trend.level == "info" and trend.note.startswith("cannot alarm: no window's PSI")


def test_psi_matches_an_independent_implementation():
    rng = np.random.default_rng(0)
    for _ in range(5):
        reference = rng.standard_t(4, size=rng.integers(200, 2000)) * rng.uniform(0.5, 2)
        actual = rng.standard_t(4, size=rng.integers(60, 600)) * rng.uniform(0.5, 2) + rng.normal(0, 0.5)
        ours = float(population_stability_index(reference, actual))
        assert ours == pytest.approx(psi_with_pandas_cut(reference, actual), rel=1e-10)


def test_ks_matches_scipy_and_a_hand_computed_statistic():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(400, 6))
    window = rng.normal(0.3, 1.2, size=(40, 6))
    window[3, 2] = np.nan  # missing values are left out
    got = series_drift("x", reference, window, DriftConfig()).ks
    x, y = reference.ravel(), window.ravel()[np.isfinite(window.ravel())]
    assert got == pytest.approx(ks_2samp(x, y).statistic, abs=1e-15)
    assert got == pytest.approx(ks_by_hand(x, y), abs=1e-15)


def test_all_nan_or_too_few_values_read_insufficient_data_never_inf():
    rng = np.random.default_rng(2)
    config = DriftConfig()
    reference, window = rng.normal(size=(300, 4)), rng.normal(size=(63, 4))
    empty = series_drift("nan", np.full((300, 4), np.nan), window, config)
    assert empty.level == INSUFFICIENT and empty.psi is None and empty.ks is None and empty.n_reference == 0
    few = window.copy()
    few.ravel()[49:] = np.nan  # 49 values < 50
    assert series_drift("few", reference, few, config).level == INSUFFICIENT
    few.ravel()[49] = 1.0  # 50 values: enough
    assert series_drift("enough", reference, few, config).level in ("info", "warning", "critical")
    infinite = window.copy()
    infinite[:, 0] = np.inf  # non-finite values are missing, not drift
    assert np.isfinite(series_drift("inf", reference, infinite, config).psi)
    result = DriftResult(("2020-01-01", "2020-03-31"), ("2010-01-01", "2019-12-31"), "test", "now", config,
                         (empty,))  # fmt: skip
    text = json.dumps(result.to_json(), allow_nan=False)  # refuses NaN and inf
    assert '"psi": null' in text and result.level == "info" and result.reasons == []


def test_assess_is_the_same_for_a_batch_as_one_series_at_a_time_and_thresholds_ignore_the_window():
    rng = np.random.default_rng(3)
    reference = np.cumsum(rng.normal(size=(3, 400, 5)), axis=1) * 0.05 + rng.normal(size=(3, 400, 5))
    window = rng.normal(size=(3, 63, 5))
    config = DriftConfig()
    batch = assess(reference, window, config)
    for i in range(3):
        one = assess(reference[i], window[i], config)
        for name in ("psi", "ks", "n", "n_reference", "warning", "critical", "chunks", "level"):
            np.testing.assert_allclose(getattr(batch, name)[i], getattr(one, name), rtol=1e-12, err_msg=name)
    other = assess(reference, window + 1.0, config)
    np.testing.assert_array_equal(other.warning, batch.warning)
    np.testing.assert_array_equal(other.critical, batch.critical)
    assert (other.psi > batch.psi).all()


def test_stable_iid_data_keeps_the_configured_thresholds():
    rng = np.random.default_rng(4)
    a = assess(rng.normal(size=(20, 1000, 10)), rng.normal(size=(20, 63, 10)), DriftConfig())
    assert (a.warning == 0.1).all() and (a.critical == 0.25).all() and (a.chunks == 45).all()
    assert (a.level == 0).all()


@pytest.mark.parametrize(
    "fields",
    [{"warning": 0.3, "critical": 0.2}, {"warning": 0.0}, {"psi_floor": 0.0}, {"chunk_days": 1},
     {"warning_quantile": 0.9, "critical_quantile": 0.8}, {"critical_quantile": 1.0}, {"min_values": 0}],
)  # fmt: skip
def test_config_refuses_impossible_settings(fields):
    with pytest.raises(ValueError):
        DriftConfig(**fields)


def test_result_level_is_the_worst_series_with_one_reason_each():
    def series(name: str, level: str, value: float) -> SeriesDrift:
        return SeriesDrift(name, value, 0.2, 100, 1000, {"warning": 0.1, "critical": 0.25}, level)

    result = DriftResult(
        ("2020-01-01", "2020-03-31"),
        ("2010-01-01", "2019-12-31"),
        "test",
        "now",
        DriftConfig(),
        (series("a", "info", 0.01), series("b", "warning", 0.12)),
        (series("c", "critical", 0.4),),
    )
    assert result.level == "critical"
    assert result.reasons == ["c: PSI 0.400 >= critical threshold 0.250 (KS 0.200, 100 values)",
                              "b: PSI 0.120 >= warning threshold 0.100 (KS 0.200, 100 values)"]  # fmt: skip
    out = result.to_json()
    assert {"level", "reasons", "window", "created_at", "features", "predictions"} <= set(out)
    assert out["method"]["psi_floor"] == FLOOR and out["method"]["chunk_days"] == 63


# Autocorrelated synthetic features: each symbol an AR(1) around a common mean that is itself a slow AR(1).
# (symbol AR coefficient, mean AR coefficient, mean's standard deviation); feature 0 is the one shifted.
FEATURES = ((0.5, 0.98, 0.05), (0.9, 0.98, 0.2), (0.95, 0.99, 0.2), (0.8, 0.99, 0.3))
SEEDS, REFERENCE_DAYS, WINDOW_DAYS, SYMBOLS = 200, 2520, 63, 10  # ten years of reference, a quarter's window


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float, burn: int = 300) -> np.ndarray:
    """(S, T, ...) unit-variance AR(1) along axis 1 (after a burn-in)."""
    noise = rng.standard_normal((shape[0], shape[1] + burn, *shape[2:]))
    return lfilter([np.sqrt(1 - phi**2)], [1, -phi], noise, axis=1)[:, burn:].astype(np.float32)


@pytest.fixture(scope="module")
def autocorrelated() -> tuple[np.ndarray, np.ndarray]:
    """Reference (S, F, T_ref, N) and window (S, F, T_win, N): the window follows the reference unchanged."""
    rng = np.random.default_rng(0)
    shape = (SEEDS, REFERENCE_DAYS + WINDOW_DAYS)
    panel = np.stack([_ar1(rng, (*shape, SYMBOLS), phi) + sd * _ar1(rng, (*shape, 1), mean_phi)
                      for phi, mean_phi, sd in FEATURES], axis=1)  # fmt: skip
    return panel[:, :, :REFERENCE_DAYS], panel[:, :, REFERENCE_DAYS:]


def test_no_shift_raises_few_false_alarms_thanks_to_the_calibration(autocorrelated):
    reference, window = autocorrelated
    a = assess(reference, window, DriftConfig())  # (S, F) per seed and feature
    per_feature = (a.level >= 1).mean(axis=0)
    any_feature = (a.level >= 1).any(axis=1).mean()
    uncalibrated = (a.psi >= 0.1).mean(axis=0)  # the rule of thumb alone
    print(f"\nno shift, {SEEDS} seeds: false warnings per feature {per_feature}, in any feature {any_feature:.3f}; "
          f"PSI >= 0.1 (uncalibrated) per feature {uncalibrated}")  # fmt: skip
    assert (per_feature <= 0.05).all() and any_feature <= 0.05
    assert (uncalibrated[1:] >= 0.2).all(), "the persistent features should alarm without the calibration"
    assert (a.warning[:, 1:] > 0.1).all() and (a.critical > a.warning).all()


def test_a_half_sigma_shift_is_flagged_in_that_feature_only(autocorrelated):
    reference, window = autocorrelated
    sigma = reference[:, 0].reshape(SEEDS, -1).std(axis=1)  # (S,) feature 0's pooled reference spread
    shifted = window.copy()
    shifted[:, 0] += 0.5 * sigma[:, None, None]
    a = assess(reference, shifted, DriftConfig())
    flagged = a.level[:, 0] >= 1
    only = flagged & (a.level[:, 1:] < 1).all(axis=1)
    print(f"\n0.5 sigma shift, {SEEDS} seeds: flagged {flagged.mean():.3f}, flagged in that feature only "
          f"{only.mean():.3f}")  # fmt: skip
    assert flagged.mean() >= 0.95 and only.mean() >= 0.95
