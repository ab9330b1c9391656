"""Indicator kernels against published values, hand computations, identities
and two independent implementations (the `ta` library and bench's pandas code)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from bench.pandas_features import pandas_features
from rayfolio.data import indicators as ind
from rayfolio.data.features import FEATURES, compute_symbol_features
from rayfolio.data.synthetic import SyntheticPanelConfig, generate_panel

# Wilder's RSI worked example as StockCharts publishes it (33 closes, 14-period RSI).
WILDER_CLOSES = np.array([
    44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433, 46.0826, 45.8931,
    46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116, 46.2222, 45.6439, 46.2122, 46.2521,
    45.7137, 46.4515, 45.7835, 45.3548, 44.0288, 44.1783, 44.2181, 44.5672, 43.4205, 42.6628, 43.1314,
])  # fmt: skip
WILDER_RSI = np.array([
    70.53278948, 66.31856181, 66.54982994, 69.40630534, 66.35516906, 57.97485571, 62.92960675, 63.25714756,
    56.05929872, 62.37707144, 54.70757308, 50.42277441, 39.98982315, 41.46048198, 41.86891609, 45.46321245,
    37.30404209, 33.07952299, 37.77295211,
])  # fmt: skip


def test_rsi_matches_wilders_published_example():
    out = ind.rsi(WILDER_CLOSES, 14)
    assert np.isnan(out[:14]).all()
    np.testing.assert_allclose(out[14:], WILDER_RSI, atol=1e-7)


def test_rsi_edge_cases():
    assert ind.rsi(np.arange(1.0, 31.0), 14)[-1] == 100.0  # nothing ever fell
    assert ind.rsi(np.arange(31.0, 1.0, -1), 14)[-1] == 0.0
    assert ind.rsi(np.full(30, 7.0), 14)[-1] == 50.0  # nothing moved: neutral
    assert np.isnan(ind.rsi(np.arange(1.0, 10.0), 14)).all()  # too short


def test_small_hand_computed_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(ind.rolling_mean(x, 3), [np.nan, np.nan, 2, 3, 4])
    np.testing.assert_allclose(ind.rolling_std(x, 2, ddof=0), [np.nan, 0.5, 0.5, 0.5, 0.5])
    # span 3 -> alpha 0.5: 1, 1.5, 2.25, 3.125, 4.0625
    np.testing.assert_allclose(ind.ema(x, 3, min_periods=1), [1, 1.5, 2.25, 3.125, 4.0625])
    np.testing.assert_allclose(ind.ema(x, 3), [np.nan, np.nan, 2.25, 3.125, 4.0625])
    # Wilder n=2: seed mean(1,2)=1.5, then (2.25, 3.125, 4.0625)
    np.testing.assert_allclose(ind.wilder_smooth(x, 2), [np.nan, 1.5, 2.25, 3.125, 4.0625])
    np.testing.assert_allclose(ind.log_return(x, 2), [np.nan, np.nan, np.log(3), np.log(2), np.log(5 / 3)])
    np.testing.assert_allclose(ind.forward_log_return(x, 2), [np.log(3), np.log(2), np.log(5 / 3), np.nan, np.nan])
    np.testing.assert_allclose(
        ind.rolling_max_drawdown(np.array([10.0, 12, 9, 11, 6, 8]), 3), [np.nan, np.nan, -0.25, -0.25, -5 / 11, -5 / 11]
    )
    # OBV: first day +v, up +v, flat 0, down -v
    np.testing.assert_allclose(ind.obv(np.array([5.0, 6, 6, 4]), np.array([10.0, 20, 30, 40])), [10, 30, 30, -10])
    # True range: h-l on day 0, then the gap to the previous close when larger.
    high, low, close = np.array([10.0, 12, 11]), np.array([9.0, 11, 8]), np.array([9.5, 11.5, 10])
    np.testing.assert_allclose(ind.true_range(high, low, close), [1.0, 2.5, 3.5])


def test_bollinger_identities():
    close = np.array([10.0] * 19 + [10.0, 11.0])
    pctb = ind.bollinger_pctb(close, 20, 2.0)
    assert np.isnan(pctb[19])  # a flat window has no band
    window = close[1:]
    mid, sd = window.mean(), window.std()
    assert pctb[20] == pytest.approx((11.0 - (mid - 2 * sd)) / (4 * sd))


@pytest.fixture(scope="module")
def ohlcv() -> pd.DataFrame:
    return generate_panel(SyntheticPanelConfig(n_assets=3, n_days=700, seed=7))


def test_against_ta_library(ohlcv):
    one = ohlcv[ohlcv.symbol == ohlcv.symbol.iloc[0]].reset_index(drop=True)
    c, h, lo, v = (one[k].to_numpy() for k in ("close", "high", "low", "volume"))
    macd = ta.trend.MACD(one.close, 26, 12, 9)
    line, signal = ind.macd(c)
    np.testing.assert_allclose(line, macd.macd(), rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(signal, macd.macd_signal(), rtol=1e-10, equal_nan=True)
    bb = ta.volatility.BollingerBands(one.close, 20, 2)
    np.testing.assert_allclose(ind.bollinger_pctb(c), bb.bollinger_pband(), rtol=1e-9, equal_nan=True)
    expected_atr = ta.volatility.AverageTrueRange(one.high, one.low, one.close, 14).average_true_range()
    np.testing.assert_allclose(ind.atr(h, lo, c)[13:], expected_atr[13:], rtol=1e-10)
    # Continuous prices never tie, where ta's OBV and the standard one agree.
    expected_obv = ta.volume.OnBalanceVolumeIndicator(one.close, one.volume).on_balance_volume()
    np.testing.assert_allclose(ind.obv(c, v), expected_obv, rtol=1e-12)
    # ta seeds RSI's averages with 0 instead of Wilder's simple mean; the two
    # converge as (13/14)^t, so compare after the seed has washed out.
    expected_rsi = ta.momentum.RSIIndicator(one.close, 14).rsi()
    np.testing.assert_allclose(ind.rsi(c)[300:], expected_rsi[300:], atol=1e-6)


def test_every_feature_against_pandas_reference(ohlcv):
    expected = pandas_features(ohlcv)
    for symbol, rows in ohlcv.groupby("symbol"):
        rows = rows.sort_values("date")
        got = compute_symbol_features({c: rows[c].to_numpy() for c in rows.columns}, FEATURES, (5, 20, 60))
        want = expected[expected.symbol == symbol]
        for name in [f.name for f in FEATURES] + ["label_fwd_5d", "label_fwd_20d", "label_fwd_60d"]:
            np.testing.assert_allclose(
                got[name], want[name], rtol=1e-8, atol=1e-10, equal_nan=True, err_msg=f"{symbol} {name}"
            )


def test_warmup_rows_match_the_catalogue(ohlcv):
    """Each feature is NaN for exactly its declared warm-up and defined after it."""
    rows = ohlcv[ohlcv.symbol == ohlcv.symbol.iloc[0]]
    got = compute_symbol_features({c: rows[c].to_numpy() for c in rows.columns}, FEATURES, (5,))
    for feature in FEATURES:
        values = got[feature.name]
        assert np.isnan(values[: feature.warmup]).all(), feature.name
        assert np.isfinite(values[feature.warmup :]).all(), feature.name
