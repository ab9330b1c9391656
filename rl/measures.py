"""Performance and risk measures of daily net returns (DESIGN.md's definitions).

Sharpe = mean / std of daily net returns x sqrt(TRADING_DAYS_PER_YEAR), no risk-free rate;
returns compound; drawdowns are of the compounded value; VaR and CVaR are
historical, of daily returns, at 95%, as positive losses.
"""

from __future__ import annotations

import math

import numpy as np

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR


def annual_return(returns: np.ndarray) -> float:
    """Compound annual growth rate."""
    growth = float(np.prod(1.0 + returns))
    return growth ** (TRADING_DAYS_PER_YEAR / len(returns)) - 1.0 if growth > 0 else -1.0


def sharpe(returns: np.ndarray) -> float:
    sd = returns.std(ddof=1)
    return float(returns.mean() / sd * math.sqrt(TRADING_DAYS_PER_YEAR)) if sd > 0 else float("nan")


def sortino(returns: np.ndarray) -> float:
    """Mean over the downside deviation below 0 (sample, n-1), annualised."""
    downside = math.sqrt(float(np.sum(np.minimum(returns, 0.0) ** 2)) / (len(returns) - 1))
    return float(returns.mean() / downside * math.sqrt(TRADING_DAYS_PER_YEAR)) if downside > 0 else float("nan")


def max_drawdown(returns: np.ndarray) -> float:
    """Largest fall of the compounded value from its running peak (the start counts as a peak)."""
    value = np.cumprod(1.0 + returns)
    peak = np.maximum.accumulate(np.maximum(value, 1.0))
    return float(np.max(1.0 - value / peak))


def value_at_risk(returns: np.ndarray, level: float = 0.95) -> float:
    """The loss not exceeded on ``level`` of days: minus the empirical (1-level) quantile."""
    tail = (1.0 - level) * len(returns)
    i = min(len(returns) - 1, math.floor(tail + 1e-9))
    return float(-np.sort(returns)[i])


def conditional_value_at_risk(returns: np.ndarray, level: float = 0.95) -> float:
    """Mean loss over the worst (1-level) share of days; the boundary day counts
    fractionally so the tail weighs exactly (1-level) (Rockafellar and Uryasev)."""
    ordered = np.sort(returns)
    tail = (1.0 - level) * len(returns)
    whole = math.ceil(tail) - 1
    if whole <= 0:
        return float(-ordered[0])
    return float(-(ordered[:whole].sum() + ordered[whole] * (tail - whole)) / tail)


def information_ratio(returns: np.ndarray, benchmark: np.ndarray) -> float:
    return sharpe(returns - benchmark)


def bootstrap_sharpe_interval(
    returns: np.ndarray, samples: int, block: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the Sharpe ratio under the stationary bootstrap
    (Politis and Romano 1994): blocks of geometric length with mean ``block``
    days keep the serial dependence of daily returns."""
    rng = np.random.default_rng(seed)
    n = len(returns)
    position = np.arange(n)
    starts = rng.integers(0, n, (samples, n))
    new_block = rng.random((samples, n)) < 1.0 / block
    new_block[:, 0] = True
    block_start = np.maximum.accumulate(np.where(new_block, position, 0), axis=1)  # (B, n)
    index = (np.take_along_axis(starts, block_start, axis=1) + position - block_start) % n
    resampled = returns[index]
    sd = resampled.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = resampled.mean(axis=1) / sd * math.sqrt(TRADING_DAYS_PER_YEAR)
    ratios = ratios[np.isfinite(ratios)]
    alpha = (1.0 - level) / 2
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))


def performance(
    returns: np.ndarray,
    *,
    costs: np.ndarray,
    turnover: np.ndarray,
    benchmark: np.ndarray | None,
    bootstrap_samples: int = 2000,
    bootstrap_block: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of the backtest table for one strategy's daily net returns."""
    years = len(returns) / TRADING_DAYS_PER_YEAR
    ann = annual_return(returns)
    mdd = max_drawdown(returns)
    low, high = bootstrap_sharpe_interval(returns, bootstrap_samples, bootstrap_block, seed)
    return {
        "annual_return": ann,
        "volatility": float(returns.std(ddof=1) * math.sqrt(TRADING_DAYS_PER_YEAR)),
        "sharpe": sharpe(returns),
        "sharpe_ci_low": low,
        "sharpe_ci_high": high,
        "sortino": sortino(returns),
        "calmar": ann / mdd if mdd > 0 else float("nan"),
        "max_drawdown": mdd,
        "var_95": value_at_risk(returns),
        "cvar_95": conditional_value_at_risk(returns),
        "turnover": float(np.sum(turnover) / years),  # sum |trades| per year, 1.0 = the whole book once
        "costs_paid": float(np.sum(costs)),  # over the period, fraction of value
        "information_ratio": information_ratio(returns, benchmark) if benchmark is not None else float("nan"),
        "days": len(returns),
    }
