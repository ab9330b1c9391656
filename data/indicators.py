"""Vectorised technical-indicator kernels on one symbol's arrays.

Every function takes whole 1-D float64 arrays of one symbol, ordered by date,
and returns an array of the same length with NaN where the window is not yet
full. All kernels are causal: the value at index t uses only inputs at <= t,
which is what makes the feature store point-in-time. There is no Python loop
over rows: rolling windows use cumulative sums or strided views, and the
recursive averages (EMA, Wilder) run as IIR filters in ``scipy.signal.lfilter``.

Definitions follow the conventions of the ``ta`` library (pandas ``rolling`` /
``ewm(adjust=False)``) except RSI, which uses Wilder's original seeding (simple
average of the first ``n`` changes, as TA-Lib and StockCharts compute it).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR


def _nan_like(x: np.ndarray) -> np.ndarray:
    return np.full(x.shape, np.nan, dtype=np.float64)


def lag(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` shifted ``k`` steps into the future (``out[t] = x[t-k]``); k < 0 looks ahead."""
    out = _nan_like(x)
    if k == 0:
        out[:] = x
    elif k > 0 and k < len(x):
        out[k:] = x[:-k]
    elif k < 0 and -k < len(x):
        out[:k] = x[-k:]
    return out


def log_return(close: np.ndarray, h: int) -> np.ndarray:
    """Trailing log return over ``h`` observations: log(c[t] / c[t-h])."""
    return np.log(close) - np.log(lag(close, h))


def forward_log_return(close: np.ndarray, h: int, delay: int = 0) -> np.ndarray:
    """Label: log(c[t+delay+h] / c[t+delay]); NaN for the last delay+h rows.

    With delay 0 it uses t+1..t+h (enter at today's close); with delay 1,
    t+1..t+1+h (enter at the next close, a day to act on the signal).
    """
    entry = close if delay == 0 else lag(close, -delay)
    return np.log(lag(close, -(delay + h))) - np.log(entry)


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of the last ``w`` values (pandas ``rolling(w).mean()``)."""
    out = _nan_like(x)
    if len(x) < w:
        return out
    # Centre on the first value before summing: keeps the running sum small,
    # so the difference of two cumulative sums loses no precision on prices.
    centred = x - x[0]
    csum = np.concatenate(([0.0], np.cumsum(centred)))
    out[w - 1 :] = (csum[w:] - csum[:-w]) / w + x[0]
    return out


def rolling_std(x: np.ndarray, w: int, ddof: int = 1) -> np.ndarray:
    """Standard deviation over the last ``w`` values; NaN inputs give NaN windows."""
    out = _nan_like(x)
    if len(x) < w:
        return out
    # Two-pass std on a strided view (N-w+1, w): exact for flat windows, where a
    # cumulative-sum variance would leave rounding noise instead of zero.
    out[w - 1 :] = sliding_window_view(x, w).std(axis=1, ddof=ddof)
    return out


def ema(x: np.ndarray, span: int, min_periods: int | None = None, *, prev: float | None = None) -> np.ndarray:
    """Exponential moving average, ``pandas.ewm(span, adjust=False)``.

    Starts at the first finite value of ``x`` (leading NaNs are skipped) and is
    NaN until ``min_periods`` (default ``span``) values have been seen. With
    ``prev`` (the average at the row before ``x[0]``) it continues a series that
    is past its warm-up: an append computes only its new rows.
    """
    alpha = 2.0 / (span + 1.0)
    if prev is not None:
        return _continue_smooth(x, alpha, prev)
    return _exp_smooth(x, alpha, span if min_periods is None else min_periods)


def _continue_smooth(x: np.ndarray, alpha: float, prev: float) -> np.ndarray:
    """y[t] = alpha x[t] + (1 - alpha) y[t-1] from y[-1] = ``prev``: the same filter step
    as the full series takes at that row, so the continuation matches it."""
    if len(x) == 0:
        return _nan_like(x)
    out, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * prev])
    return out


def _exp_smooth(x: np.ndarray, alpha: float, min_periods: int) -> np.ndarray:
    out = _nan_like(x)
    finite = np.flatnonzero(np.isfinite(x))
    if len(finite) == 0:
        return out
    start = finite[0]
    body = x[start:]
    # y[t] = alpha x[t] + (1 - alpha) y[t-1], seeded so that y[start] = x[start].
    smoothed, _ = lfilter([alpha], [1.0, alpha - 1.0], body, zi=[(1.0 - alpha) * body[0]])
    out[start:] = smoothed
    out[: start + min_periods - 1] = np.nan
    return out


def wilder_smooth(x: np.ndarray, n: int, first: int = 0, *, prev: float | None = None) -> np.ndarray:
    """Wilder's running average: seed = mean(x[first:first+n]), then alpha = 1/n.

    With ``prev`` (the average at the row before ``x[0]``) it continues a seeded series.
    """
    if prev is not None:
        return _continue_smooth(x, 1.0 / n, prev)
    out = _nan_like(x)
    seed_at = first + n - 1
    if len(x) <= seed_at:
        return out
    seed = x[first : seed_at + 1].mean()
    alpha = 1.0 / n
    rest = x[seed_at + 1 :]
    out[seed_at] = seed
    if len(rest):
        out[seed_at + 1 :], _ = lfilter([alpha], [1.0, alpha - 1.0], rest, zi=[(1.0 - alpha) * seed])
    return out


def gains_losses(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row price rise and fall (each >= 0; the first row's are 0: no change is known)."""
    change = np.diff(close, prepend=close[:1])
    return np.where(change > 0, change, 0.0), np.where(change < 0, -change, 0.0)


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's RSI in [0, 100]; first value at index n (needs n price changes)."""
    gains, losses = gains_losses(close)
    return rsi_from_averages(wilder_smooth(gains, n, first=1), wilder_smooth(losses, n, first=1))


def rsi_from_averages(gain: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """RSI from Wilder's average gain and loss."""
    total = gain + loss
    # 100 * g / (g + l) is 100 - 100 / (1 + g/l) without dividing by a zero loss;
    # a window with no change at all is neutral (50).
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 100.0 * gain / total, 50.0)
    out[np.isnan(total)] = np.nan
    return out


def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """MACD line (EMA fast - EMA slow of close) and its signal line (EMA of MACD)."""
    line = ema(close, fast) - ema(close, slow)
    return line, ema(line, signal)


def bollinger_pctb(close: np.ndarray, w: int = 20, k: float = 2.0) -> np.ndarray:
    """Bollinger %b: where close sits in the band mean +- k population std (0 = lower)."""
    mid = rolling_mean(close, w)
    width = 2.0 * k * rolling_std(close, w, ddof=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (close - (mid - 0.5 * width)) / width
    out[width == 0] = np.nan
    return out


def realized_vol(close: np.ndarray, w: int) -> np.ndarray:
    """Annualised std (ddof=1) of the last ``w`` daily log returns."""
    returns = log_return(close, 1)
    out = _nan_like(close)
    if len(close) <= w:
        return out
    # Running sums give every window in O(N) (vol_252 would cost N x 252 on a
    # strided view). Returns are small and are shifted by the first one, a value
    # from the past of every window, so the sums stay well conditioned and the
    # result at t never depends on data after t.
    r = returns[1:] - returns[1]
    s1 = np.concatenate(([0.0], np.cumsum(r)))
    s2 = np.concatenate(([0.0], np.cumsum(r * r)))
    sum1, sum2 = s1[w:] - s1[:-w], s2[w:] - s2[:-w]
    var = (sum2 - sum1 * sum1 / w) / (w - 1)
    # Flat prices give a variance of exactly zero, not rounding noise.
    var[var < 1e-20] = 0.0
    out[w:] = np.sqrt(var) * np.sqrt(TRADING_DAYS_PER_YEAR)
    return out


def rolling_max_drawdown(close: np.ndarray, w: int = 60) -> np.ndarray:
    """Worst peak-to-trough loss (<= 0) within the last ``w`` closes."""
    out = _nan_like(close)
    if len(close) < w:
        return out
    windows = sliding_window_view(close, w)  # (N-w+1, w)
    peaks = np.maximum.accumulate(windows, axis=1)
    out[w - 1 :] = (windows / peaks).min(axis=1) - 1.0
    return out


def momentum_12_1(close: np.ndarray, long: int = TRADING_DAYS_PER_YEAR, skip: int = 21) -> np.ndarray:
    """12-1 momentum: log return from t-``long`` (a year) to t-``skip`` (a month), skipping the last month."""
    return np.log(lag(close, skip)) - np.log(lag(close, long))


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(h - l, |h - c[t-1]|, |l - c[t-1]|); h - l on the first day."""
    prev = lag(close, 1)
    ranges = np.stack([high - low, np.abs(high - prev), np.abs(low - prev)])
    return np.nanmax(ranges, axis=0)


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's average true range; seed = mean of the first n true ranges."""
    return wilder_smooth(true_range(high, low, close), n)


def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """On-balance volume: +volume on up days, -volume on down days, 0 when flat.

    Starts at the first day's volume (TA-Lib's convention).
    """
    return running_sum(obv_flow(close, volume))


def obv_flow(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Each day's signed volume: +volume up, -volume down, 0 flat; +volume on the first day."""
    direction = np.sign(np.diff(close, prepend=close[:1]))
    direction[0] = 1.0
    return direction * volume


def running_sum(x: np.ndarray, prev: float | None = None) -> np.ndarray:
    """Cumulative sum, continued from ``prev`` (the sum at the row before ``x[0]``) when given:
    summed in the same order as the full series, so the continuation matches it bit for bit."""
    if prev is None:
        return np.cumsum(x)
    return np.cumsum(np.concatenate(([prev], x)))[1:]


def volume_ratio(volume: np.ndarray, w: int = 20) -> np.ndarray:
    """Today's volume over its mean of the last ``w`` days (today included)."""
    mean = rolling_mean(volume, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = volume / mean
    out[mean == 0] = np.nan
    return out
