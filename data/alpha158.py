"""A close-only subset of Qlib's Alpha158: the rolling block of
``Alpha158DL.get_feature_config`` (microsoft/qlib, qlib/contrib/data/loader.py)
as ``FeatureDef`` entries, the extra columns of the ``alpha158`` feature set.

Names are ``alpha_<qlib name in lower case>_<d>`` for d in ``WINDOWS``
(``alpha_roc_5``, ``alpha_corr_20``): the prefix marks the set in a list of
features, the window says how far back each looks. Qlib's order (operator,
then window) is kept: 18 close-only operators x 5 windows = 90 features, plus
5 ``alpha_corr_<d>`` where the panel has volume.

Where this differs from Qlib, and why:

- MAX, MIN, RSV, IMAX and IMIN read ``close`` where Qlib reads ``high`` and
  ``low``: close is the one column every panel has, so the set is the same on
  close-only data (the embedded sample) as on bars.
- Qlib rolls with ``min_periods=1`` (a value from the first row on, over a
  partial window); here a window must be full and the value is NaN before, so
  ``alpha_std_60`` always means 60 rows, and each feature states its warm-up.
- RSQR is NaN on a flat window (R^2 is 0/0 there; Qlib also blanks it), CORR is
  NaN when either series is flat within the window.

Every kernel works on strided windows (``sliding_window_view``, shape
(T-d+1, d)) of one symbol's arrays, with no loop over rows. The value at row t
reads rows t-d+1..t only (t-d..t for the day-over-day changes), which keeps
the set point-in-time. The statistics one window length feeds to many
features (mean, the OLS fit, the sorted window) are computed once per symbol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rayfolio.data import indicators as ind
from rayfolio.data.features import FeatureDef, SymbolData

WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
EPS = 1e-12  # Qlib's guard in RSV, SUMP and SUMN denominators, kept so values match its definitions


@dataclass(frozen=True)
class WindowStats:
    """Statistics of close over each trailing window of ``d`` rows.

    Every array has shape (T,) and is NaN on the first ``d - 1`` rows.
    """

    mean: np.ndarray
    std: np.ndarray  # ddof=1, as Qlib's Std (pandas rolling std)
    slope: np.ndarray  # OLS slope of close on 1..d
    rsquare: np.ndarray  # R^2 of that fit; NaN on a flat window
    resi: np.ndarray  # the fit's residual at the window's last row
    max: np.ndarray
    min: np.ndarray
    q20: np.ndarray  # quantiles with linear interpolation (pandas / numpy default)
    q80: np.ndarray
    rank: np.ndarray  # share of the window at or below today's close, ties averaged: in (0, 1]
    imax: np.ndarray  # 1-based position of the window's maximum, oldest row = 1 (first one on ties)
    imin: np.ndarray


def _padded(values: np.ndarray, n: int, warmup: int) -> np.ndarray:
    """(n - warmup,) values -> (n,) with NaN in front."""
    out = np.full(n, np.nan)
    out[warmup:] = values
    return out


def _sorted_quantile(ordered: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile of each row of an already sorted (M, d) array."""
    pos = q * (ordered.shape[1] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, ordered.shape[1] - 1)
    return ordered[:, lo] + (pos - lo) * (ordered[:, hi] - ordered[:, lo])


def window_stats(close: np.ndarray, d: int) -> WindowStats:
    """The per-window statistics of ``close`` (T,) behind the rolling Alpha158 features."""
    n = len(close)
    if n < d:
        nothing = np.full(n, np.nan)
        return WindowStats(*(nothing,) * 12)
    w = sliding_window_view(close, d)  # (M, d), M = T - d + 1; row j ends at row j + d - 1
    last = w[:, -1]
    mean = w.mean(axis=1)
    centred = w - mean[:, None]  # (M, d)
    ss = np.einsum("ij,ij->i", centred, centred)  # sum of squares about the window mean
    # OLS of y on x = 1..d: with x centred, slope = sum(x_c y_c) / sum(x_c^2), sum(x_c^2) = d (d^2 - 1) / 12.
    x = np.arange(1, d + 1) - (d + 1) / 2.0
    sxx = d * (d * d - 1) / 12.0
    sxy = centred @ x
    slope = sxy / sxx
    ordered = np.sort(w, axis=1)
    flat = ordered[:, 0] == ordered[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rsquare = np.where(flat, np.nan, sxy * sxy / (sxx * ss))
    stats = {
        "mean": mean,
        "std": np.sqrt(ss / (d - 1)),
        "slope": slope,
        "rsquare": rsquare,
        "resi": centred[:, -1] - slope * x[-1],  # y_d - (mean + slope * (d - mean of x))
        "max": ordered[:, -1],
        "min": ordered[:, 0],
        "q20": _sorted_quantile(ordered, 0.2),
        "q80": _sorted_quantile(ordered, 0.8),
        # pandas' average rank of the last value, over d: (#below + (#equal + 1) / 2) / d.
        "rank": ((w < last[:, None]).sum(axis=1) + ((w == last[:, None]).sum(axis=1) + 1) / 2.0) / d,
        "imax": (w.argmax(axis=1) + 1.0) / d,
        "imin": (w.argmin(axis=1) + 1.0) / d,
    }
    return WindowStats(**{k: _padded(v, n, d - 1) for k, v in stats.items()})


@dataclass(frozen=True)
class ChangeStats:
    """Shares over the last ``d`` day-over-day changes of close; (T,), NaN on the first ``d`` rows."""

    up: np.ndarray  # share of days with close > the day before
    down: np.ndarray  # share with close < the day before
    gain: np.ndarray  # sum of rises / (sum of |changes| + EPS)
    loss: np.ndarray  # sum of falls / (sum of |changes| + EPS)


def change_stats(close: np.ndarray, d: int) -> ChangeStats:
    n = len(close)
    if n <= d:
        nothing = np.full(n, np.nan)
        return ChangeStats(*(nothing,) * 4)
    change = np.diff(close)  # (T-1,); change[k] leads into row k+1

    def last_d(values: np.ndarray) -> np.ndarray:
        """Sums over each run of d consecutive values, (T-d,): running sums up to row t only (point in time)."""
        total = np.concatenate(([0], np.cumsum(values)))
        return total[d:] - total[:-d]

    # Flat windows give exactly 0 in both sums (the same running total subtracted from itself).
    moved = last_d(np.abs(change)) + EPS
    stats = {
        "up": last_d(change > 0) / d,  # integer counts: exact
        "down": last_d(change < 0) / d,
        "gain": last_d(np.maximum(change, 0.0)) / moved,
        "loss": last_d(np.maximum(-change, 0.0)) / moved,
    }
    return ChangeStats(**{k: _padded(v, n, d) for k, v in stats.items()})


def rolling_corr(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` (T,) over the last ``d`` rows; NaN where either is flat."""
    n = len(x)
    if n < d:
        return np.full(n, np.nan)
    wx, wy = sliding_window_view(x, d), sliding_window_view(y, d)  # (M, d) each
    xc = wx - wx.mean(axis=1, keepdims=True)
    yc = wy - wy.mean(axis=1, keepdims=True)
    flat = (np.ptp(wx, axis=1) == 0) | (np.ptp(wy, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.einsum("ij,ij->i", xc, yc) / np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    return _padded(np.where(flat, np.nan, corr), n, d - 1)


def _windows(c: SymbolData, d: int) -> WindowStats:
    return c.memo(("alpha158-window", d), lambda: window_stats(c["close"], d))


def _changes(c: SymbolData, d: int) -> ChangeStats:
    return c.memo(("alpha158-change", d), lambda: change_stats(c["close"], d))


# (Qlib name, definition with {d}, value from the window statistics and close). Warm-up: d - 1 rows.
_ROLLING: tuple[tuple[str, str, Callable[[WindowStats, np.ndarray], np.ndarray]], ...] = (
    ("ma", "Mean(close, {d}) / close", lambda s, c: s.mean / c),
    ("std", "Std(close, {d}) / close (ddof=1)", lambda s, c: s.std / c),
    ("beta", "Slope(close, {d}) / close: OLS slope of the last {d} closes on 1..{d}", lambda s, c: s.slope / c),
    ("rsqr", "Rsquare(close, {d}): R^2 of that OLS fit (NaN on a flat window)", lambda s, c: s.rsquare),
    ("resi", "Resi(close, {d}) / close: that fit's residual today", lambda s, c: s.resi / c),
    ("max", "Max(close, {d}) / close (Qlib: Max(high))", lambda s, c: s.max / c),
    ("min", "Min(close, {d}) / close (Qlib: Min(low))", lambda s, c: s.min / c),
    ("qtlu", "Quantile(close, {d}, 0.8) / close (linear interpolation)", lambda s, c: s.q80 / c),
    ("qtld", "Quantile(close, {d}, 0.2) / close (linear interpolation)", lambda s, c: s.q20 / c),
    ("rank", "Rank(close, {d}): percentile of today's close among the last {d}, ties averaged", lambda s, c: s.rank),
    (
        "rsv",
        "(close - Min(close, {d})) / (Max(close, {d}) - Min(close, {d}) + 1e-12) (Qlib: high and low)",
        lambda s, c: (c - s.min) / (s.max - s.min + EPS),
    ),
    ("imax", "IdxMax(close, {d}) / {d}: 1-based position of the highest close, oldest = 1", lambda s, c: s.imax),
    ("imin", "IdxMin(close, {d}) / {d}: 1-based position of the lowest close, oldest = 1", lambda s, c: s.imin),
)

# Over day-over-day changes: warm-up d rows (d changes need d + 1 closes).
_CHANGES: tuple[tuple[str, str, Callable[[ChangeStats], np.ndarray]], ...] = (
    ("cntp", "Mean(close > Ref(close, 1), {d}): share of up days", lambda s: s.up),
    ("cntn", "Mean(close < Ref(close, 1), {d}): share of down days", lambda s: s.down),
    (
        "sump",
        "Sum(Greater(close - Ref(close, 1), 0), {d}) / (Sum(Abs(close - Ref(close, 1)), {d}) + 1e-12)",
        lambda s: s.gain,
    ),
    (
        "sumn",
        "Sum(Greater(Ref(close, 1) - close, 0), {d}) / (Sum(Abs(close - Ref(close, 1)), {d}) + 1e-12)",
        lambda s: s.loss,
    ),
)


def _name(kind: str, d: int) -> str:
    return f"alpha_{kind}_{d}"


def _roc(d: int) -> FeatureDef:
    return FeatureDef(
        _name("roc", d), f"Ref(close, {d}) / close", ("close",), lambda c: ind.lag(c["close"], d) / c["close"], d
    )


def _rolling(kind: str, definition: str, value, d: int) -> FeatureDef:
    return FeatureDef(
        _name(kind, d), definition.format(d=d), ("close",), lambda c: value(_windows(c, d), c["close"]), d - 1
    )


def _change(kind: str, definition: str, value, d: int) -> FeatureDef:
    return FeatureDef(_name(kind, d), definition.format(d=d), ("close",), lambda c: value(_changes(c, d)), d)


def _corr(d: int) -> FeatureDef:
    return FeatureDef(
        _name("corr", d),
        f"Corr(close, Log(volume + 1), {d}): Pearson over the last {d} rows (NaN when either is flat)",
        ("close", "volume"),
        lambda c: rolling_corr(c["close"], np.log1p(c["volume"]), d),
        d - 1,
    )


# Qlib's order: ROC, MA, STD, BETA, RSQR, RESI, MAX, MIN, QTLU, QTLD, RANK, RSV, IMAX, IMIN, CORR, CNTP, CNTN,
# SUMP, SUMN (each over every window).
ALPHA158: tuple[FeatureDef, ...] = (
    *(_roc(d) for d in WINDOWS),
    *(_rolling(kind, text, value, d) for kind, text, value in _ROLLING for d in WINDOWS),
    *(_corr(d) for d in WINDOWS),
    *(_change(kind, text, value, d) for kind, text, value in _CHANGES for d in WINDOWS),
)
