"""Market-relative features against a loop over dates with np.polyfit, identities
of the equal-weight market, and the point-in-time property."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayfolio.data.relative import RELATIVE_FEATURES, RELATIVE_NAMES, market_return, relative_features


def returns_panel(seed: int = 0, t: int = 160, n: int = 5, gaps: bool = True) -> np.ndarray:
    """(T, N) daily log returns with a common factor and no return on the first day; with ``gaps``, also
    one asset listed late and one with missing days, as real panels have."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0003, 0.01, t)
    r = 0.5 * market[:, None] * rng.uniform(0.5, 2.0, n) + rng.normal(0, 0.01, (t, n))
    r[0] = np.nan
    if gaps:
        r[:40, 0] = np.nan  # listed on day 40
        r[[90, 91, 130], 3] = np.nan  # days without a row
    return r


def reference(r: np.ndarray) -> dict[str, np.ndarray]:
    """The definitions, one date and asset at a time: market = pandas' skipna row mean, beta = np.polyfit."""
    t_len, n = r.shape
    m = pd.DataFrame(r).mean(axis=1).to_numpy()
    out = {name: np.full((t_len, n), np.nan) for name in RELATIVE_NAMES}
    for t in range(t_len):
        for i in range(n):
            if t >= 59 and np.isfinite(r[t - 59 : t + 1, i]).all():
                rw, mw = r[t - 59 : t + 1, i], m[t - 59 : t + 1]
                beta = np.polyfit(mw, rw, 1)[0]
                out["mkt_beta_60"][t, i] = beta
                for window in (20, 60):
                    e = rw[-window:] - beta * mw[-window:]
                    out[f"resid_mom_{window}"][t, i] = e.sum() / (e.std(ddof=1) * np.sqrt(window))
            if t >= 19 and np.isfinite(r[t - 19 : t + 1, i]).all():
                out["excess_ret_20"][t, i] = (r[t - 19 : t + 1, i] - m[t - 19 : t + 1]).sum()
    return out


def test_matches_the_loop_reference():
    r = returns_panel()
    got = relative_features(r)
    want = reference(r)
    assert got.shape == (*r.shape, 4) and RELATIVE_NAMES == tuple(f.name for f in RELATIVE_FEATURES)
    for k, name in enumerate(RELATIVE_NAMES):
        np.testing.assert_allclose(got[..., k], want[name], rtol=1e-7, atol=1e-10, equal_nan=True, err_msg=name)
        assert np.isfinite(want[name]).sum() > 100, name  # the comparison covers real values
    beta = got[..., 0]
    assert np.isnan(beta[:99, 0]).all() and np.isfinite(beta[99, 0])  # returns from day 40: 60 of them on day 99
    assert np.isfinite(beta[89, 3]) and np.isnan(beta[90:, 3]).all()  # a window with a missing day has no value


def test_warmups_as_declared():
    r = returns_panel(gaps=False)
    got = relative_features(r)
    for k, feature in enumerate(RELATIVE_FEATURES):
        column = got[:, 0, k]
        assert np.isnan(column[: feature.warmup]).all() and np.isfinite(column[feature.warmup]), feature.name


def test_equal_weight_identities():
    r = returns_panel(gaps=False)
    r[100, 2] = np.nan  # one missing day: the market is the mean of the other four
    full = np.isfinite(r).all(axis=1)
    m = market_return(r)
    np.testing.assert_allclose(m[full], r[full].mean(axis=1))
    assert np.isnan(m[0]) and m[100] == pytest.approx(np.delete(r[100], 2).mean())
    got = relative_features(r)
    # Where every asset was present over the whole window: betas average to 1 (the market is their mean),
    # excess returns to 0.
    complete = np.isfinite(got[..., 0]).all(axis=1)
    assert complete.sum() > 20
    np.testing.assert_allclose(got[complete, :, 0].mean(axis=1), 1.0, atol=1e-9)
    complete_20 = np.isfinite(got[..., 3]).all(axis=1)
    np.testing.assert_allclose(got[complete_20, :, 3].mean(axis=1), 0.0, atol=1e-12)


def test_a_lone_asset_is_the_market():
    r = returns_panel(gaps=False)[:, [1]]
    got = relative_features(r)
    np.testing.assert_allclose(got[61:, 0, 0], 1.0)
    assert np.isnan(got[..., 1:3]).all()  # residuals are all zero: no score
    np.testing.assert_array_equal(got[21:, 0, 3], 0.0)


@pytest.mark.parametrize("cut", [70, 100, 140])
def test_changing_returns_after_d_moves_nothing_at_or_before_d(cut):
    r = returns_panel()
    changed = r.copy()
    rng = np.random.default_rng(cut)
    changed[cut + 1 :] += rng.normal(0, 0.02, changed[cut + 1 :].shape)
    changed[cut + 1 :, 0] = np.nan  # an asset delisted after D
    before, after = relative_features(r), relative_features(changed)
    np.testing.assert_array_equal(after[: cut + 1], before[: cut + 1])
    assert not np.allclose(after[cut + 1, 1:], before[cut + 1, 1:])
