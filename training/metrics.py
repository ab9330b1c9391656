"""Forecast quality on (dates x assets) panels, as quants read it.

Inputs are arrays of shape (T, N): one row per date, one column per asset,
NaN where an asset has no prediction or label that day. Cross-sectional
metrics follow Qlib's definitions: a correlation per date across assets,
then the mean over dates (IC, Rank IC) and mean / std (ICIR, Rank ICIR).
The Deflated Sharpe Ratio follows Bailey and Lopez de Prado (2014).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from rayfolio.data.conventions import DEFAULT_COST_BPS, TRADING_DAYS_PER_YEAR

EULER_GAMMA = 0.5772156649015329


def _common_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isfinite(a) & np.isfinite(b)


def daily_ic(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Pearson correlation across assets for each date, shape (T,); NaN when
    fewer than 3 assets have both values or either side is constant."""
    mask = _common_mask(pred, label)
    n = mask.sum(axis=1)
    p, y = np.where(mask, pred, 0.0), np.where(mask, label, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pm = p.sum(axis=1) / n
        ym = y.sum(axis=1) / n
        pc = np.where(mask, p - pm[:, None], 0.0)
        yc = np.where(mask, y - ym[:, None], 0.0)
        cov = (pc * yc).sum(axis=1)
        out = cov / np.sqrt((pc**2).sum(axis=1) * (yc**2).sum(axis=1))
    out[n < 3] = np.nan
    return out


def _rank_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return pd.DataFrame(np.where(mask, x, np.nan)).rank(axis=1).to_numpy()


def daily_rank_ic(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Spearman correlation across assets for each date (ties get average ranks)."""
    mask = _common_mask(pred, label)
    return daily_ic(_rank_rows(pred, mask), _rank_rows(label, mask))


def hit_rate(pred: np.ndarray, label: np.ndarray) -> float:
    """Share of (date, asset) pairs where the predicted sign matches the realised one."""
    mask = _common_mask(pred, label) & (label != 0)
    return float((np.sign(pred[mask]) == np.sign(label[mask])).mean()) if mask.any() else float("nan")


def top_k_precision(pred: np.ndarray, label: np.ndarray, fraction: float = 0.2) -> float:
    """Mean over dates of |predicted top k  intersect  realised top k| / k, k = ceil(fraction * assets)."""
    mask = _common_mask(pred, label)
    n = mask.sum(axis=1)
    k = np.ceil(fraction * n)
    pred_rank = pd.DataFrame(np.where(mask, pred, np.nan)).rank(axis=1, ascending=False, method="first").to_numpy()
    true_rank = pd.DataFrame(np.where(mask, label, np.nan)).rank(axis=1, ascending=False, method="first").to_numpy()
    hits = ((pred_rank <= k[:, None]) & (true_rank <= k[:, None])).sum(axis=1)
    valid = n >= 2
    return float((hits[valid] / k[valid]).mean()) if valid.any() else float("nan")


def long_short_weights(signal: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Daily top-minus-bottom quantile weights, shape (T, N): +1/k on the k
    highest signals, -1/k on the k lowest (k = ceil(fraction * assets)), 0 elsewhere."""
    mask = np.isfinite(signal)
    n = mask.sum(axis=1)
    k = np.ceil(fraction * n)
    frame = pd.DataFrame(np.where(mask, signal, np.nan))
    top = frame.rank(axis=1, ascending=False, method="first").to_numpy() <= k[:, None]
    bottom = frame.rank(axis=1, ascending=True, method="first").to_numpy() <= k[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = (top.astype(float) - bottom.astype(float)) / k[:, None]
    weights[n < 2] = 0.0
    return np.nan_to_num(weights)


def long_short_returns(
    signal: np.ndarray, next_returns: np.ndarray, cost_bps: float = DEFAULT_COST_BPS, fraction: float = 0.2
) -> np.ndarray:
    """Net daily returns of the long-short portfolio formed on ``signal``.

    The portfolio is formed at the close of day t from the signal at t and
    earns ``next_returns[t]``, the simple return from t to t+1 (no look-ahead).
    Costs: ``cost_bps`` per unit of turnover, sum |w_t - w_{t-1}|.
    """
    weights = long_short_weights(signal, fraction)
    gross = (weights * np.nan_to_num(next_returns)).sum(axis=1)
    turnover = np.abs(np.diff(weights, axis=0, prepend=np.zeros((1, weights.shape[1])))).sum(axis=1)
    return gross - cost_bps / 1e4 * turnover


def sharpe(returns: np.ndarray, periods: int = TRADING_DAYS_PER_YEAR) -> float:
    """Annualised Sharpe ratio: mean / std (ddof=1) of periodic returns x sqrt(periods)."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    if len(r) < 2 or r.std(ddof=1) == 0:
        return float("nan")
    return float(r.mean() / r.std(ddof=1) * math.sqrt(periods))


def probabilistic_sharpe(returns: np.ndarray, benchmark_sr: float = 0.0) -> float:
    """P[true Sharpe > benchmark] given the sample (per-period, non-annualised SRs),
    with the skewness and kurtosis correction of Bailey and Lopez de Prado."""
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    t = len(r)
    if t < 3 or r.std(ddof=1) == 0:
        return float("nan")
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    denom = math.sqrt(max(1e-12, 1 - skew * sr + (kurt - 1) / 4 * sr**2))
    return float(stats.norm.cdf((sr - benchmark_sr) * math.sqrt(t - 1) / denom))


def expected_max_sharpe(trial_sharpes: np.ndarray) -> float:
    """E[max SR] of N unskilled trials with the trials' SR variance (per period)."""
    srs = np.asarray(trial_sharpes, dtype=float)
    srs = srs[np.isfinite(srs)]
    n = len(srs)
    if n < 2:
        return 0.0
    spread = math.sqrt(srs.var(ddof=1))
    return spread * ((1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e)))


def deflated_sharpe(returns: np.ndarray, trial_sharpes: np.ndarray) -> float:
    """Deflated Sharpe Ratio: PSR against the Sharpe the best of ``len(trial_sharpes)``
    unskilled trials would show. ``trial_sharpes`` are per-period (non-annualised)."""
    return probabilistic_sharpe(returns, expected_max_sharpe(trial_sharpes))


@dataclass(frozen=True)
class ForecastMetrics:
    ic: float
    rank_ic: float
    icir: float
    rank_icir: float
    hit_rate: float
    top_k_precision: float
    long_short_sharpe: float  # annualised, after costs
    days: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ir(series: np.ndarray) -> float:
    s = series[np.isfinite(series)]
    return float(s.mean() / s.std(ddof=1)) if len(s) > 1 and s.std(ddof=1) > 0 else float("nan")


def evaluate_forecast(
    pred: np.ndarray, label: np.ndarray, next_returns: np.ndarray, cost_bps: float = DEFAULT_COST_BPS
) -> ForecastMetrics:
    """All forecast metrics for one model and horizon over one period."""
    ic, ric = daily_ic(pred, label), daily_rank_ic(pred, label)
    return ForecastMetrics(
        ic=float(np.nanmean(ic)),
        rank_ic=float(np.nanmean(ric)),
        icir=_ir(ic),
        rank_icir=_ir(ric),
        hit_rate=hit_rate(pred, label),
        top_k_precision=top_k_precision(pred, label),
        long_short_sharpe=sharpe(long_short_returns(pred, next_returns, cost_bps)),
        days=int(np.isfinite(ic).sum()),
    )
