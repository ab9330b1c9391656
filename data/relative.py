"""Market-relative features: each asset against the equal-weight universe.

They need every asset's return on the same date, so they are computed on the
dense (dates x assets) panel, not per symbol in the store's pipeline; a Panel
built from an ``alpha158`` store appends them (training/panel.py).

Input: daily log returns ``r`` of shape (T, N), NaN where an asset has no row
(or no previous row) that day. The market ``m`` (T,) is the mean of the
returns present each day. Every rolling window needs all of its days present
for the asset (NaN otherwise), and each value at t reads rows <= t only:
windowed sums are differences of running sums up to t, so changing a later
price moves nothing at or before t.

- ``mkt_beta_60``: OLS slope (with intercept) of r_i on m over the last 60 days.
- ``resid_mom_20`` / ``resid_mom_60``: residuals e = r_i - beta_t m over the last
  L days, with beta_t the 60-day beta at t; sum(e) / (std(e, ddof=1) sqrt(L)),
  the t-statistic of the mean residual (Blitz, Huij and Martens 2011 scale the
  residual return by its volatility the same way).
- ``excess_ret_20``: sum of r_i - m over the last 20 days.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

BETA_WINDOW = 60


@dataclass(frozen=True)
class RelativeDef:
    name: str
    definition: str
    warmup: int  # leading rows of an asset (its first has no return) that are NaN by construction


RELATIVE_FEATURES: tuple[RelativeDef, ...] = (
    RelativeDef("mkt_beta_60", "OLS slope of the asset's daily log return on the market's over the last 60 days", 60),
    RelativeDef("resid_mom_20", "t-stat of the last 20 days' residuals r - beta_60(t) * m: sum / (std * sqrt(20))", 60),
    RelativeDef("resid_mom_60", "t-stat of the last 60 days' residuals r - beta_60(t) * m: sum / (std * sqrt(60))", 60),
    RelativeDef("excess_ret_20", "sum of the last 20 days' log returns minus the market's", 20),
)
RELATIVE_NAMES: tuple[str, ...] = tuple(f.name for f in RELATIVE_FEATURES)


def market_return(log_returns: np.ndarray) -> np.ndarray:
    """Equal-weight universe: (T, N) -> (T,) mean of the returns present each day (NaN when none)."""
    with warnings.catch_warnings():  # a day with no return at all (the first) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(log_returns, axis=1)


def _window_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` rows along axis 0, (T, ...) -> (T, ...); 0 for rows before a full window
    (callers mask those with the count of present days)."""
    total = np.cumsum(values, axis=0)
    out = total.copy()
    out[window:] -= total[:-window]
    return out


class _Windows:
    """Windowed sums of r, m and their products over one asset's present days, (T, N) each."""

    def __init__(self, r: np.ndarray, m: np.ndarray, window: int) -> None:
        present = np.isfinite(r) & np.isfinite(m)[:, None]
        r0 = np.where(present, r, 0.0)
        m0 = np.where(present, m[:, None], 0.0)
        self.window = window
        self.full = _window_sum(present.astype(np.int64), window) == window  # every day of the window present
        self.r, self.m = _window_sum(r0, window), _window_sum(m0, window)
        self.rr, self.mm, self.rm = (_window_sum(a * b, window) for a, b in ((r0, r0), (m0, m0), (r0, m0)))


def rolling_beta(log_returns: np.ndarray, market: np.ndarray, window: int = BETA_WINDOW) -> np.ndarray:
    """(T, N) slope of each asset's return on ``market`` (T,) over the last ``window`` days."""
    s = _Windows(log_returns, market, window)
    return _beta(s)


def _beta(s: _Windows) -> np.ndarray:
    n = s.window
    cov = s.rm - s.r * s.m / n
    var = s.mm - s.m * s.m / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s.full & (var > 0), cov / var, np.nan)


def residual_momentum(log_returns: np.ndarray, market: np.ndarray, beta: np.ndarray, window: int) -> np.ndarray:
    """(T, N) t-stat of the mean residual r - beta[t] m over the last ``window`` days, beta (T, N) fixed at t."""
    s = _Windows(log_returns, market, window)
    # With beta_t fixed over the window: sum(e) = sum(r) - b sum(m), sum(e^2) = sum(r^2) - 2 b sum(rm) + b^2 sum(m^2).
    total = s.r - beta * s.m
    squares = s.rr - 2.0 * beta * s.rm + beta * beta * s.mm
    var = (squares - total * total / window) / (window - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = total / np.sqrt(var * window)
    # Residuals all alike (a lone asset is the market) carry no signal: NaN rather than rounding noise over ~0.
    meaningful = var > 1e-12 * s.rr / window
    return np.where(s.full & np.isfinite(beta) & meaningful, score, np.nan)


def excess_return(log_returns: np.ndarray, market: np.ndarray, window: int = 20) -> np.ndarray:
    """(T, N) sum of r - m over the last ``window`` days."""
    s = _Windows(log_returns, market, window)
    return np.where(s.full, s.r - s.m, np.nan)


def relative_features(log_returns: np.ndarray) -> np.ndarray:
    """(T, N) daily log returns -> (T, N, 4) features in ``RELATIVE_NAMES`` order."""
    r = np.asarray(log_returns, dtype=np.float64)
    m = market_return(r)
    beta = rolling_beta(r, m, BETA_WINDOW)
    return np.stack(
        [beta, residual_momentum(r, m, beta, 20), residual_momentum(r, m, beta, 60), excess_return(r, m, 20)], axis=-1
    )
