"""Risk filters between the allocator's proposal and the recommendation.

Order matters and is fixed: the turnover cap first (it limits optional
trades), then the hard limits, each of which only sells risky positions into
cash, so no later check can undo an earlier one: excluded symbols, position
caps, the volatility target scaled by the user's risk tolerance, the
circuit breaker for stressed markets, and the cash floor. The trades a hard
limit requires are always made, even past the turnover cap. Every check
reports what it changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR
from rayfolio.rl.covariance import ShrunkCovariance


class HouseLimits(BaseModel):
    """The house's limits; live-reconfigurable (Serve ``user_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_position: float = Field(0.25, gt=0, le=1)  # per asset, whatever the user asks
    cash_floor: float = Field(0.02, ge=0, lt=1)
    turnover_cap: float = Field(1.0, gt=0)  # sum |trade| per recommendation, optional trades only
    vol_target: float = Field(0.15, gt=0)  # annualised, at risk tolerance 0.5 (scaled by 0.5 + tolerance)
    breaker_drawdown: float = Field(0.15, gt=0, lt=1)  # market drawdown from its 1-year peak that trips it
    breaker_vol_ratio: float = Field(1.75, gt=1)  # 20-day over 1-year market volatility that trips it
    breaker_risky_cap: float = Field(0.5, ge=0, le=1)  # risky exposure allowed while tripped
    excluded: tuple[str, ...] = ()  # the house's own exclusions
    # Approval: a recommendation that trades more than this (sum |trade|), or moves any one position by
    # more than ``approval_position_change``, waits for an admin (status pending_approval); None: no rule.
    # The defaults catch trades larger than the whole portfolio and moves larger than the position cap.
    approval_turnover: float | None = Field(1.0, gt=0)
    approval_position_change: float | None = Field(0.25, gt=0, le=1)
    valid_for_days: int = Field(1, ge=1, le=20)  # business days a recommendation stays valid (pending: expires)


def approval_reasons(trades: np.ndarray, symbols: tuple[str, ...], limits: HouseLimits) -> list[str]:
    """The house approval rules a recommendation's ``trades`` (N+1,), cash last, cross."""
    reasons = []
    risky = np.abs(np.asarray(trades, dtype=np.float64)[:-1])
    turnover = float(risky.sum())
    if limits.approval_turnover is not None and turnover > limits.approval_turnover + 1e-12:
        reasons.append(f"turnover {turnover:.3f} above {limits.approval_turnover:.3f}")
    if limits.approval_position_change is not None and len(risky):
        i = int(np.argmax(risky))
        if risky[i] > limits.approval_position_change + 1e-12:
            reasons.append(f"{symbols[i]} changes by {risky[i]:.3f}, above {limits.approval_position_change:.3f}")
    return reasons


@dataclass(frozen=True)
class RiskProfile:
    risk_tolerance: float  # 0 (cautious) .. 1
    max_position: float  # the user's cap per asset, 0..1
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class MarketState:
    """What the filters know about the market on the as-of date, from data dated <= it."""

    symbols: tuple[str, ...]
    # Of daily returns over the lookback: Ledoit-Wolf, the baselines' estimator (rl/covariance.py). Well
    # conditioned when N > lookback, O(L N) per portfolio variance, and O(N) memory of its own (it reads
    # the lookback's returns in place): a cached state no longer holds an N x N matrix.
    covariance: ShrunkCovariance
    market_drawdown: float  # of the equal-weight market from its running peak over the lookback
    vol_ratio: float  # short-window over lookback volatility of the equal-weight market

    @classmethod
    def from_returns(cls, symbols: tuple[str, ...], returns: np.ndarray, short: int = 20) -> MarketState:
        """``returns`` (days, N): the lookback's daily returns, oldest first, ending at the as-of date
        (kept by reference, not copied, when finite: the caller must not change them)."""
        market = np.nanmean(returns, axis=1)
        value = np.cumprod(1 + market)
        drawdown = float(1 - value[-1] / max(1.0, value.max()))
        long_vol = market.std(ddof=1)
        ratio = float(market[-short:].std(ddof=1) / long_vol) if long_vol > 0 else 1.0
        finite = returns if np.isfinite(returns).all() else np.nan_to_num(returns)  # unknown returns count as 0
        return cls(tuple(symbols), ShrunkCovariance.fit(finite), drawdown, ratio)


@dataclass(frozen=True)
class Check:
    name: str
    changed: bool
    detail: str
    amount: float = 0.0  # sum over risky assets of |weight change| this check made (0 when unchanged)


def portfolio_vol(weights: np.ndarray, covariance: ShrunkCovariance) -> float:
    """Annualised volatility of risky weights (N,) under a daily covariance."""
    return math.sqrt(max(covariance.variance(weights), 0.0) * TRADING_DAYS_PER_YEAR)


def apply_risk_filters(
    proposal: np.ndarray, current: np.ndarray, profile: RiskProfile, limits: HouseLimits, state: MarketState
) -> tuple[np.ndarray, list[Check]]:
    """``proposal`` and ``current``: weights (N+1,), cash last, each summing to 1.
    Returns the filtered weights (N+1,), summing to 1, and one check per rule."""
    symbols = state.symbols
    w = np.asarray(proposal, dtype=np.float64).copy()
    current = np.asarray(current, dtype=np.float64)
    checks = []

    def to_cash(new_risky: np.ndarray) -> None:
        w[:-1] = new_risky
        w[-1] = 1.0 - new_risky.sum()

    def amount(before: np.ndarray) -> float:
        return float(np.abs(before[:-1] - w[:-1]).sum())

    def moved(before: np.ndarray) -> str:
        changed = np.flatnonzero(np.abs(before[:-1] - w[:-1]) > 1e-9)
        parts = [f"{symbols[i]} {before[i]:.3f} -> {w[i]:.3f}" for i in changed[:8]]
        return ", ".join(parts) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")

    # 1. Turnover cap: move only part of the way from the current weights.
    trades = w - current
    turnover = float(np.abs(trades[:-1]).sum())
    if turnover > limits.turnover_cap:
        before = w.copy()
        w = current + trades * (limits.turnover_cap / turnover)
        checks.append(Check("turnover_cap", True, f"turnover {turnover:.3f} cut to {limits.turnover_cap:.3f}",
                            amount(before)))  # fmt: skip
    else:
        checks.append(Check("turnover_cap", False, f"turnover {turnover:.3f} <= {limits.turnover_cap:.3f}"))

    # 2. Exclusions: the user's and the house's.
    before = w.copy()
    excluded = set(profile.exclude) | set(limits.excluded)
    mask = np.array([s in excluded for s in symbols])
    to_cash(np.where(mask, 0.0, w[:-1]))
    checks.append(Check("excluded_symbols", bool(np.any(before[:-1][mask] > 0)), moved(before) or "nothing held",
                        amount(before)))  # fmt: skip

    # 3. Position caps: the tighter of the user's and the house's.
    before = w.copy()
    cap = min(profile.max_position, limits.max_position)
    to_cash(np.minimum(w[:-1], cap))
    changed = bool(np.any(before[:-1] > cap + 1e-12))
    checks.append(Check("max_position", changed, moved(before) if changed else f"every position <= {cap:.3f}",
                        amount(before)))  # fmt: skip

    # 4. Volatility target, scaled by risk tolerance.
    before = w.copy()
    target = limits.vol_target * (0.5 + profile.risk_tolerance)
    vol = portfolio_vol(w[:-1], state.covariance)
    if vol > target:
        to_cash(w[:-1] * (target / vol))
        checks.append(Check("volatility_target", True, f"volatility {vol:.3f} scaled to {target:.3f}", amount(before)))
    else:
        checks.append(Check("volatility_target", False, f"volatility {vol:.3f} <= target {target:.3f}"))

    # 5. Circuit breaker: de-risk in stressed markets.
    stressed = state.market_drawdown > limits.breaker_drawdown or state.vol_ratio > limits.breaker_vol_ratio
    risky = float(w[:-1].sum())
    why = f"market drawdown {state.market_drawdown:.3f}, volatility ratio {state.vol_ratio:.2f}"
    if stressed and risky > limits.breaker_risky_cap:
        before = w.copy()
        to_cash(w[:-1] * (limits.breaker_risky_cap / risky))
        checks.append(Check("circuit_breaker", True, f"tripped ({why}): risky {risky:.3f} -> {w[:-1].sum():.3f}",
                            amount(before)))  # fmt: skip
    else:
        checks.append(Check("circuit_breaker", False, ("tripped, exposure already within cap: " if stressed else
                                                        "not tripped: ") + why))  # fmt: skip

    # 6. Cash floor.
    if w[-1] < limits.cash_floor - 1e-12:
        cash, before = w[-1], w.copy()
        to_cash(w[:-1] * ((1.0 - limits.cash_floor) / w[:-1].sum()))
        checks.append(Check("cash_floor", True, f"cash {cash:.3f} raised to {limits.cash_floor:.3f}", amount(before)))
    else:
        checks.append(Check("cash_floor", False, f"cash {w[-1]:.3f} >= {limits.cash_floor:.3f}"))
    w[:-1] = np.maximum(w[:-1], 0.0)
    w[-1] = 1.0 - w[:-1].sum()
    return w, checks
