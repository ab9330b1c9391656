"""The forecast tilt around 1/N: hold every tradable asset near equal weight and
lean each one by its forecast, w_i proportional to 1 + k z_i, with a cap per
asset and a no-trade band.

Concentrated top-k forecast portfolios lose to 1/N on a small universe (the
forecasts are noisy, the concentration is not); a tilt keeps 1/N's
diversification and lets the forecast move it only as far as ``k`` says, and
``k`` is chosen on the validation split (``choose_tilt``), where k = 0 (1/N
itself) is one of the candidates.

``z`` is the forecasters' ensemble cross-sectional z-score per asset at a date,
(T, N) float64, NaN where there is no forecast. Weights are (N+1,), cash last.
``propose`` is the one decision rule: the backtest calls it through
``TiltAllocator.decide``, the service with the ensemble's z at the request date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR
from rayfolio.rl.backtest import rebalance_dates, simulate
from rayfolio.rl.config import TiltConfig, TiltParams
from rayfolio.rl.market import MarketData
from rayfolio.rl.measures import sharpe
from rayfolio.training.cards import TILT_NAME, TiltCard
from rayfolio.training.registry import ModelRegistry, RegistryError

__all__ = [
    "TiltAllocator",
    "TiltParams",
    "apply_band",
    "choose_tilt",
    "load_tilt",
    "propose",
    "register_tilt",
    "tilt_weights",
]


def tilt_weights(z: np.ndarray, tradable: np.ndarray, k: float, cap: float) -> np.ndarray:
    """Target weights (N+1,), cash last, of the tilt at one date.

    Over the n tradable assets, w_i = (1/n)(1 + k z_i) clipped at 0, then the
    long-only book closest in scale to it with every weight <= ``cap``: w_i =
    min(cap, s (1 + k z_i)+) with s set so the weights sum to 1 (water-filling:
    cap those above it, rescale the rest, repeat). A tradable asset with no
    forecast (NaN z) counts as z = 0: it is held at its 1/n share, untilted.

    When fewer than 1/cap assets have a positive weight (n cap < 1, or a strong
    tilt that zeroes most of the book) the cap cannot be met fully invested:
    they all hold ``cap`` and the remainder is cash. No tradable asset: all
    cash. k = 0 is exactly 1/n (the equal-weight baseline's numbers) when 1/n <= cap.

    z, tradable: (N,); non-tradable assets get 0 whatever their z.
    """
    n_assets = len(z)
    out = np.zeros(n_assets + 1)
    assets = np.flatnonzero(tradable)
    if len(assets) == 0:
        out[-1] = 1.0
        return out
    # (n,) unnormalised: the 1/n cancels in the rescaling, and 1.0 / n stays exact at k = 0.
    raw = np.maximum(1.0 + k * np.nan_to_num(z[assets], nan=0.0), 0.0)
    if raw.sum() <= 0.0:  # every tilt negative: nothing to lean towards, hold 1/n
        raw = np.ones(len(assets))
    w = np.zeros(len(assets))
    free = raw > 0.0  # (n,) assets whose weight is still s * raw
    while free.any():  # at most n passes; ends with every positive asset capped when there are < 1/cap of them
        # Stays > 0: the j assets capped in a pass held more than j * cap of the budget.
        budget = 1.0 - cap * np.count_nonzero(~free & (raw > 0.0))
        scaled = raw[free] * (budget / raw[free].sum())
        over = scaled > cap
        if not over.any():
            w[free] = scaled
            break
        # s only grows as assets are capped, so an asset over the cap now stays over it.
        idx = np.flatnonzero(free)[over]
        w[idx] = cap
        free[idx] = False
    out[assets] = w
    out[-1] = max(0.0, 1.0 - out[:-1].sum())
    return out


def apply_band(target: np.ndarray, current: np.ndarray, band: float, force: np.ndarray | None = None) -> np.ndarray:
    """``target`` (N+1,) with the trades smaller than ``band`` skipped: an asset whose
    |target_i - current_i| < band keeps current_i, and cash (last) absorbs the difference.

    Keeping a small overweight can leave too little cash for the other trades (cash
    would go negative): the traded buys are then scaled down together, each by the
    same fraction of its increment, until the book sums to 1 (sells and skipped
    positions unchanged). For a long-only ``current`` that is always enough; should
    it not be (a levered ``current``), the target is returned whole.

    ``force`` (N,) bool: assets traded whatever the size (an asset that cannot be
    held over the next period must be sold). band = 0 returns target unchanged.
    """
    target = np.asarray(target, dtype=np.float64)
    if band <= 0.0:
        return target.copy()
    current = np.asarray(current, dtype=np.float64)
    risky_target, risky_current = target[:-1], current[:-1]  # (N,)
    skip = np.abs(risky_target - risky_current) < band
    if force is not None:
        skip &= ~force
    risky = np.where(skip, risky_current, risky_target)
    excess = risky.sum() - 1.0  # > 0: cash would be negative
    if excess > 0.0:
        buys = ~skip & (risky_target > risky_current)
        increments = np.where(buys, risky_target - risky_current, 0.0)
        if increments.sum() < excess:
            return target.copy()
        risky = risky - increments * (excess / increments.sum())
    out = np.empty_like(target)
    out[:-1] = risky
    out[-1] = max(0.0, 1.0 - risky.sum())
    return out


def propose(z_t: np.ndarray, tradable_t: np.ndarray, current: np.ndarray, params: TiltParams) -> np.ndarray:
    """The tilt's decision at one date: weights (N+1,), cash last, from the z-scores (N,),
    which assets can be held over the next period (N,) bool and the current weights (N+1,)."""
    target = tilt_weights(z_t, tradable_t, params.k, params.cap)
    return apply_band(target, current, params.band, force=~np.asarray(tradable_t, dtype=bool))


@dataclass
class TiltAllocator:
    """The tilt as a backtest ``Allocator``: ``z`` (T, N) forecasts made with data dated <= t."""

    market: MarketData
    z: np.ndarray  # (T, N) float64, NaN where no forecast
    params: TiltParams
    horizon: int  # trading days held: an asset must stay listed this long to be bought
    name: str = "tilt"

    def propose(self, z_t: np.ndarray, tradable_t: np.ndarray, current: np.ndarray) -> np.ndarray:
        return propose(z_t, tradable_t, current, self.params)

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray | None:
        return self.propose(self.z[t], self.market.tradable(t, self.horizon), weights)


def choose_tilt(
    market: MarketData, z: np.ndarray, period: tuple[int, int], every: int, cost_bps: float, config: TiltConfig
) -> tuple[TiltParams, pd.DataFrame]:
    """Every (k, band) of ``config``'s grids backtested over ``period`` (the validation
    split), rebalancing every ``every`` days (also the holding period) and paying
    ``cost_bps``; the best annualised Sharpe after costs wins, ties to the smaller k
    (then the smaller band). A Sharpe that cannot be computed (no variance) never wins.

    Returns the chosen parameters and the grid: one row per point, columns k, band,
    sharpe, turnover (sum |trades| per year, as in the backtest table).
    """
    decisions = rebalance_dates(period[0], period[1], every)
    rows = []
    for k in config.k_grid:
        for band in config.band_grid:
            params = TiltParams(k=k, band=band, cap=config.cap)
            run = simulate(TiltAllocator(market, z, params, every), market.returns, market.dates, market.symbols,
                           decisions, period[1], cost_bps)  # fmt: skip
            returns = run.returns.to_numpy()
            years = len(returns) / TRADING_DAYS_PER_YEAR
            rows.append({"k": k, "band": band, "sharpe": sharpe(returns),
                         "turnover": float(run.turnover.sum() / years)})  # fmt: skip
    grid = pd.DataFrame(rows, columns=["k", "band", "sharpe", "turnover"])
    score = grid["sharpe"].fillna(-np.inf)
    best = min(range(len(grid)), key=lambda i: (-score[i], grid["k"][i], grid["band"][i]))
    return TiltParams(k=grid["k"][best], band=grid["band"][best], cap=config.cap), grid


# ----- registry ---------------------------------------------------------------------------------


def register_tilt(
    registry: ModelRegistry, card: TiltCard, metrics: dict, stage: Literal["auto", "staging"] = "auto"
) -> tuple[str, str | None]:
    """A new version of the tilt (the card is the whole model: no weight files); stage auto
    (production if there is none yet, else staging) or staging. ``metrics`` must hold
    ``validation_sharpe``: ``best_allocator`` compares allocators by it."""
    if "validation_sharpe" not in metrics:
        raise ValueError("a tilt's metrics need 'validation_sharpe' (best_allocator compares allocators by it)")
    version = registry.register(card, {}, metrics=metrics, stage=stage)
    return version.version, registry.stage_of(version)


def load_tilt(registry: ModelRegistry, name: str = TILT_NAME) -> TiltCard:
    """The production tilt's card, checksums verified and validated."""
    card = registry.get(name).card
    if not isinstance(card, TiltCard):
        raise RegistryError(f"{name}: its production version is a {card.kind!r} card, not a tilt")
    return card
