"""The feature set written the way a pandas user would: groupby + rolling/ewm.

Two jobs: the single-process baseline of ``bench/data_pipeline.py``, and an
independent implementation the tests check the numpy kernels against (pandas'
own rolling/ewm algorithms, no code shared with ``rayfolio.data``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ANNUALISE = np.sqrt(252)


def _wilder(values: pd.Series, n: int, first: int = 0) -> pd.Series:
    """Wilder's average: seed = mean of the first n values, then ewm(alpha=1/n)."""
    seeded = values.copy().astype(float)
    seeded.iloc[: first + n - 1] = np.nan
    if len(values) >= first + n:
        seeded.iloc[first + n - 1] = values.iloc[first : first + n].mean()
    return seeded.ewm(alpha=1 / n, adjust=False).mean()


def _rsi(close: pd.Series, n: int = 14) -> pd.Series:
    change = close.diff()
    gain = _wilder(change.clip(lower=0), n, first=1)
    loss = _wilder((-change).clip(lower=0), n, first=1)
    total = gain + loss
    return (100 * gain / total).where(total > 0, 50.0).where(total.notna())


def _max_drawdown(window: np.ndarray) -> float:
    return (window / np.maximum.accumulate(window)).min() - 1


def pandas_features(panel: pd.DataFrame, horizons: tuple[int, ...] = (5, 20, 60)) -> pd.DataFrame:
    """Features and labels for a long panel (``date, symbol, close[, high, low, volume]``)."""
    df = panel.sort_values(["symbol", "date"], ignore_index=True)
    by = df.groupby("symbol", sort=False)
    close = df["close"]
    out = df[["date", "symbol"]].copy()

    def per_symbol(series: pd.Series, fn) -> pd.Series:
        return series.groupby(df["symbol"], sort=False).transform(fn)

    for h in (1, 5, 20, 60):
        out[f"ret_{h}"] = np.log(close / by["close"].shift(h))
    for w in (20, 60):
        out[f"vol_{w}"] = per_symbol(out["ret_1"], lambda s, w=w: s.rolling(w).std()) * ANNUALISE
    for w in (20, 50, 200):
        out[f"sma_ratio_{w}"] = close / per_symbol(close, lambda s, w=w: s.rolling(w).mean()) - 1
    for w in (20, 50):
        ema = per_symbol(close, lambda s, w=w: s.ewm(span=w, adjust=False, min_periods=w).mean())
        out[f"ema_ratio_{w}"] = close / ema - 1
    out["rsi_14"] = per_symbol(close, _rsi)
    macd = per_symbol(close, lambda s: s.ewm(span=12, adjust=False, min_periods=12).mean()) - per_symbol(
        close, lambda s: s.ewm(span=26, adjust=False, min_periods=26).mean()
    )
    out["macd"] = macd
    out["macd_signal"] = per_symbol(macd, lambda s: s.ewm(span=9, adjust=False, min_periods=9).mean())
    mid = per_symbol(close, lambda s: s.rolling(20).mean())
    std = per_symbol(close, lambda s: s.rolling(20).std(ddof=0))
    out["bb_pctb_20"] = (close - (mid - 2 * std)) / (4 * std)
    out["mdd_60"] = per_symbol(close, lambda s: s.rolling(60).apply(_max_drawdown, raw=True))
    out["mom_12_1"] = np.log(by["close"].shift(21) / by["close"].shift(252))
    vol_252 = per_symbol(out["ret_1"], lambda s: s.rolling(252).std()) * ANNUALISE
    out["vol_regime"] = (out["vol_20"] > vol_252).astype(float).where(out["vol_20"].notna() & vol_252.notna())
    if {"high", "low"} <= set(df.columns):
        prev = by["close"].shift(1)
        tr = pd.concat([df["high"] - df["low"], (df["high"] - prev).abs(), (df["low"] - prev).abs()], axis=1).max(
            axis=1
        )
        out["atr_14"] = per_symbol(tr, lambda s: _wilder(s, 14))
    if "volume" in df.columns:
        step = np.sign(by["close"].diff()).fillna(1.0)
        out["obv"] = per_symbol(step * df["volume"], lambda s: s.cumsum())
        out["volume_ratio_20"] = df["volume"] / per_symbol(df["volume"], lambda s: s.rolling(20).mean())
    for h in horizons:
        out[f"label_fwd_{h}d"] = np.log(by["close"].shift(-h) / close)
    return out
