"""Seeded synthetic OHLCV panels with correlated returns and volatility regimes.

Returns follow a factor model: a market factor, one sector factor per asset
and fat-tailed idiosyncratic noise, all scaled by a market-wide two-state
volatility regime (calm / stressed, a Markov chain). Every asset's series is a
pure function of ``(config, asset index)``, so any slice of a large panel can
be generated on its own (one Ray task per slice) and the whole is the same
however it is sliced.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticPanelConfig:
    """Shape and character of a synthetic panel (N assets x T business days)."""

    n_assets: int = 50
    n_days: int = 2520
    seed: int = 0
    start: str = "2000-01-03"
    n_sectors: int = 5
    stressed_vol_multiplier: float = 2.5
    p_enter_stress: float = 0.01  # daily probability calm -> stressed
    p_leave_stress: float = 0.05  # daily probability stressed -> calm
    planted_rank_ic: float = 0.0  # Rank IC of the planted signal at planted_horizon; 0 = no signal
    planted_horizon: int = 20

    def __post_init__(self) -> None:
        if self.n_assets < 1 or self.n_days < 2:
            raise ValueError(f"synthetic panel needs n_assets >= 1 and n_days >= 2, got {self.n_assets}x{self.n_days}")

    def content_hash(self) -> str:
        payload = json.dumps({**asdict(self), "generator": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class MarketState:
    """What all assets share: dates, regime path and factor returns."""

    dates: np.ndarray  # (T,) datetime64[D], business days
    stressed: np.ndarray  # (T,) bool
    market: np.ndarray  # (T,) daily log return of the market factor
    sectors: np.ndarray  # (T, n_sectors) daily sector factor returns


def market_state(cfg: SyntheticPanelConfig) -> MarketState:
    rng = np.random.default_rng([cfg.seed, 0])
    t = cfg.n_days
    dates = pd.bdate_range(cfg.start, periods=t).to_numpy().astype("datetime64[D]")
    # Regime path from alternating geometric sojourn times: no loop over days.
    n_spells = t // 2 + 2
    calm = rng.geometric(cfg.p_enter_stress, n_spells)
    stress = rng.geometric(cfg.p_leave_stress, n_spells)
    lengths = np.column_stack([calm, stress]).ravel()
    states = np.tile([False, True], n_spells)
    stressed = np.repeat(states, lengths)[:t]
    scale = np.where(stressed, cfg.stressed_vol_multiplier, 1.0)
    # Stressed markets drift down, calm ones up: regimes matter for returns too.
    drift = np.where(stressed, -0.0008, 0.0004)
    market = drift + 0.009 * scale * rng.standard_normal(t)
    sectors = 0.005 * scale[:, None] * rng.standard_normal((t, cfg.n_sectors))
    return MarketState(dates, stressed, market, sectors)


def symbol_name(i: int, cfg: SyntheticPanelConfig) -> str:
    return f"SYN{i:0{max(4, len(str(cfg.n_assets - 1)))}d}"


def generate_assets(cfg: SyntheticPanelConfig, assets: np.ndarray, state: MarketState | None = None) -> pa.Table:
    """Long OHLCV rows for the given asset indices, ordered by (asset, date)."""
    state = state or market_state(cfg)
    t = cfg.n_days
    tables = []
    scale = np.where(state.stressed, cfg.stressed_vol_multiplier, 1.0)
    for i in np.asarray(assets, dtype=np.int64):
        rng = np.random.default_rng([cfg.seed, 1, int(i)])
        beta = rng.uniform(0.5, 1.5)
        sector = int(rng.integers(cfg.n_sectors))
        gamma = rng.uniform(0.3, 1.2)
        idio_vol = rng.uniform(0.008, 0.02)
        # Student-t(5) noise scaled to unit variance: fat tails as in real returns.
        noise = rng.standard_t(5, t) / np.sqrt(5 / 3)
        ret = beta * state.market + gamma * state.sectors[:, sector] + idio_vol * scale * noise
        close = rng.lognormal(np.log(50.0), 0.8) * np.exp(np.cumsum(ret))
        day_vol = np.sqrt(beta**2 * 0.009**2 + idio_vol**2) * scale
        prev_close = np.concatenate(([close[0] * np.exp(-ret[0])], close[:-1]))
        open_ = prev_close * np.exp(0.3 * day_vol * rng.standard_normal(t))
        high = np.maximum(open_, close) * np.exp(np.abs(0.5 * day_vol * rng.standard_normal(t)))
        low = np.minimum(open_, close) * np.exp(-np.abs(0.5 * day_vol * rng.standard_normal(t)))
        base_volume = rng.lognormal(np.log(1e6), 1.0)
        volume = np.round(base_volume * np.exp(0.3 * rng.standard_normal(t)) * (1.0 + 30.0 * np.abs(ret)))
        tables.append(
            pa.table(
                {
                    "date": pa.array(state.dates, type=pa.date32()),
                    "symbol": pa.array([symbol_name(int(i), cfg)] * t, type=pa.string()),
                    "sector": pa.array([f"S{sector}"] * t, type=pa.string()),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                }
            )
        )
    return pa.concat_tables(tables)


def generate_panel(cfg: SyntheticPanelConfig) -> pd.DataFrame:
    """The whole panel in memory, long format (for small panels and tests)."""
    return generate_assets(cfg, np.arange(cfg.n_assets)).to_pandas()
