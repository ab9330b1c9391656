"""The close-only Alpha158 subset against an independent pandas implementation of
Qlib's formulas (rolling / apply with np.polyfit, no code shared with
rayfolio.data.alpha158), hand-computed values, and the point-in-time property."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfolio.data.alpha158 import ALPHA158, WINDOWS, change_stats, window_stats
from rayfolio.data.features import (
    FEATURES,
    FeatureSetError,
    available_features,
    compute_symbol_features,
    feature_catalogue,
)
from rayfolio.data.synthetic import SyntheticPanelConfig, generate_assets, generate_panel
from tests.data.test_point_in_time import perturb_after

CLOSE_ONLY = ("roc", "ma", "std", "beta", "rsqr", "resi", "max", "min", "qtlu", "qtld", "rank", "rsv", "imax", "imin",
              "cntp", "cntn", "sump", "sumn")  # fmt: skip


def _ols(window: np.ndarray) -> tuple[float, float, float]:
    """Slope, R^2 and last residual of the OLS of ``window`` on 1..d (Qlib's Slope, Rsquare, Resi)."""
    x = np.arange(1, len(window) + 1, dtype=np.float64)
    slope, intercept = np.polyfit(x, window, 1)
    fitted = slope * x + intercept
    ss_tot = ((window - window.mean()) ** 2).sum()
    rsquare = np.nan if ss_tot == 0 else 1.0 - ((window - fitted) ** 2).sum() / ss_tot
    return slope, rsquare, window[-1] - fitted[-1]


def qlib_reference(close: pd.Series, volume: pd.Series) -> dict[str, pd.Series]:
    """Qlib's Alpha158 rolling formulas in pandas, over full windows only (min_periods = d)."""
    out = {}
    change = close.diff()
    for d in WINDOWS:
        roll = close.rolling(d)
        ols = {i: roll.apply(lambda w, i=i: _ols(w)[i], raw=True) for i in range(3)}
        lo, hi = roll.min(), roll.max()
        out |= {
            f"alpha_roc_{d}": close.shift(d) / close,
            f"alpha_ma_{d}": roll.mean() / close,
            f"alpha_std_{d}": roll.std() / close,
            f"alpha_beta_{d}": ols[0] / close,
            f"alpha_rsqr_{d}": ols[1],
            f"alpha_resi_{d}": ols[2] / close,
            f"alpha_max_{d}": hi / close,
            f"alpha_min_{d}": lo / close,
            f"alpha_qtlu_{d}": roll.quantile(0.8) / close,
            f"alpha_qtld_{d}": roll.quantile(0.2) / close,
            f"alpha_rank_{d}": roll.rank(pct=True),
            f"alpha_rsv_{d}": (close - lo) / (hi - lo + 1e-12),
            f"alpha_imax_{d}": roll.apply(lambda w: w.argmax() + 1, raw=True) / d,
            f"alpha_imin_{d}": roll.apply(lambda w: w.argmin() + 1, raw=True) / d,
            f"alpha_corr_{d}": close.rolling(d).corr(np.log(volume + 1)),
            f"alpha_cntp_{d}": (change > 0).astype(float).where(change.notna()).rolling(d).mean(),
            f"alpha_cntn_{d}": (change < 0).astype(float).where(change.notna()).rolling(d).mean(),
            f"alpha_sump_{d}": change.clip(lower=0).rolling(d).sum() / (change.abs().rolling(d).sum() + 1e-12),
            f"alpha_sumn_{d}": (-change).clip(lower=0).rolling(d).sum() / (change.abs().rolling(d).sum() + 1e-12),
        }
    return out


@pytest.fixture(scope="module")
def small_panel() -> pd.DataFrame:
    """Three symbols of 140 days with volume, one of them with a tie-rich rounded close."""
    frame = generate_panel(SyntheticPanelConfig(n_assets=3, n_days=140, seed=21)).sort_values(["symbol", "date"])
    first = frame["symbol"] == frame["symbol"].iloc[0]
    frame.loc[first, "close"] = frame.loc[first, "close"].round(0)  # repeated closes: ties in RANK, IMAX, QTL*
    return frame


def test_catalogue_names_order_and_warmups():
    assert len(ALPHA158) == 95 and len({f.name for f in ALPHA158}) == 95
    assert [f.name for f in ALPHA158[:6]] == ["alpha_roc_5", "alpha_roc_10", "alpha_roc_20", "alpha_roc_30",
                                              "alpha_roc_60", "alpha_ma_5"]  # fmt: skip
    close_only = available_features(frozenset({"close"}), "alpha158")
    assert close_only[: len(FEATURES) - 3] == available_features(frozenset({"close"}))  # basic first, unchanged
    assert {f.name for f in close_only} - {f.name for f in FEATURES} == {
        f"alpha_{k}_{d}" for k in CLOSE_ONLY for d in WINDOWS
    }
    assert feature_catalogue("basic") == FEATURES == available_features(frozenset({"close", "high", "low", "volume"}))
    warmup = {f.name: f.warmup for f in ALPHA158}
    assert (warmup["alpha_roc_20"], warmup["alpha_ma_20"], warmup["alpha_cntp_20"], warmup["alpha_corr_60"]) == (
        20, 19, 20, 59)  # fmt: skip
    assert all(f.definition for f in ALPHA158)
    with pytest.raises(FeatureSetError, match="unknown feature set 'alpha360'"):
        feature_catalogue("alpha360")


def test_every_feature_matches_the_pandas_reference(small_panel):
    for _, rows in small_panel.groupby("symbol"):
        cols = {c: rows[c].to_numpy() for c in rows.columns}
        got = compute_symbol_features(cols, ALPHA158, ())
        want = qlib_reference(rows["close"].reset_index(drop=True), rows["volume"].reset_index(drop=True))
        assert set(want) == {f.name for f in ALPHA158}
        for feature in ALPHA158:
            expected = want[feature.name].to_numpy()
            np.testing.assert_allclose(got[feature.name], expected, rtol=1e-9, atol=1e-12, equal_nan=True,
                                       err_msg=feature.name)  # fmt: skip
            # NaN exactly over the stated warm-up, values after it (but R^2 and CORR on a flat window).
            assert np.isnan(got[feature.name][: feature.warmup]).all(), feature.name
            if not feature.name.startswith(("alpha_rsqr", "alpha_corr")):
                assert np.isfinite(got[feature.name][feature.warmup :]).all(), feature.name


def test_hand_computed_windows():
    s = window_stats(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 5)
    last = {k: getattr(s, k)[-1] for k in ("mean", "std", "slope", "rsquare", "resi", "max", "min", "q20", "q80",
                                           "rank", "imax", "imin")}  # fmt: skip
    expected = {"mean": 3.0, "std": np.sqrt(2.5), "slope": 1.0, "rsquare": 1.0, "resi": 0.0, "max": 5.0,
                "min": 1.0, "q20": 1.8, "q80": 4.2, "rank": 1.0, "imax": 1.0, "imin": 0.2}  # fmt: skip
    for key, value in expected.items():
        assert last[key] == pytest.approx(value, abs=1e-12), key
    assert np.isnan(s.mean[:4]).all()
    # A flat window: no trend to explain (R^2 NaN), every close ties for the middle rank.
    flat = window_stats(np.full(6, 7.0), 4)
    assert np.isnan(flat.rsquare[-1]) and flat.std[-1] == 0 and flat.slope[-1] == 0
    assert flat.rank[-1] == (0 + (4 + 1) / 2) / 4 and flat.imax[-1] == 0.25
    # Ties: window [2, 1, 2] -> today's 2 ties with the first, average rank 2.5 of 3; max first seen at 1.
    tie = window_stats(np.array([2.0, 1.0, 2.0]), 3)
    assert tie.rank[-1] == pytest.approx(2.5 / 3) and tie.imax[-1] == pytest.approx(1 / 3)
    # Changes of [1, 2, 1, 3, 3]: +1, -1, +2, 0 -> over 4: 2 up, 1 down, gains 3 / moves 4.
    c = change_stats(np.array([1.0, 2.0, 1.0, 3.0, 3.0]), 4)
    assert (c.up[-1], c.down[-1]) == (0.5, 0.25)
    assert c.gain[-1] == pytest.approx(0.75) and c.loss[-1] == pytest.approx(0.25)
    assert np.isnan(c.up[:4]).all()
    # Too short for any window: all NaN, no error.
    assert np.isnan(window_stats(np.array([1.0, 2.0]), 5).mean).all()
    assert np.isnan(change_stats(np.array([1.0, 2.0]), 5).up).all()


def test_rsv_and_sump_stay_finite_on_flat_prices():
    cols = {"date": np.arange(80), "symbol": np.array(["X"] * 80), "close": np.full(80, 10.0),
            "volume": np.full(80, 5.0)}  # fmt: skip
    out = compute_symbol_features(cols, ALPHA158, ())
    assert out["alpha_rsv_20"][-1] == 0.0 and out["alpha_sump_20"][-1] == 0.0 and out["alpha_cntp_20"][-1] == 0.0
    assert np.isnan(out["alpha_rsqr_20"][-1]) and np.isnan(out["alpha_corr_20"][-1])


N_DAYS = 200


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.integers(61, N_DAYS - 2))
def test_changing_prices_after_d_moves_no_alpha_feature_at_or_before_d(seed, cut):
    table = generate_assets(SyntheticPanelConfig(n_assets=1, n_days=N_DAYS, seed=seed % 97), np.array([0]))
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    changed = perturb_after(cols, cut, np.random.default_rng(seed))
    before = compute_symbol_features(cols, ALPHA158, ())
    after = compute_symbol_features(changed, ALPHA158, ())
    for feature in ALPHA158:
        np.testing.assert_array_equal(after[feature.name][: cut + 1], before[feature.name][: cut + 1], feature.name)
    # The boundary is tight: the first day after D moved.
    assert after["alpha_roc_5"][cut + 1] != before["alpha_roc_5"][cut + 1]
