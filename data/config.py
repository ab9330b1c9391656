"""Typed configuration of the data stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayfolio.data.synthetic import SyntheticPanelConfig


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_assets: int = Field(50, ge=1)
    n_days: int = Field(2520, ge=2)
    seed: int = 0
    # A known predictive component (the planted-signal check of the learning machinery): the
    # cross-sectional Rank IC of the true signal with the next ``planted_horizon``-day return; 0 = none.
    planted_rank_ic: float = Field(0.0, ge=0.0, lt=0.5)
    planted_horizon: int = Field(20, ge=1)

    def to_config(self) -> SyntheticPanelConfig:
        return SyntheticPanelConfig(
            n_assets=self.n_assets,
            n_days=self.n_days,
            seed=self.seed,
            planted_rank_ic=self.planted_rank_ic,
            planted_horizon=self.planted_horizon,
        )


class DataConfig(BaseModel):
    """Where prices come from and which label horizons to build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("sp500", description="'sp500', 'synthetic', or a file/directory path or URI")
    horizons: tuple[int, ...] = (5, 20, 60)
    synthetic: SyntheticOptions = SyntheticOptions()
    # basic: the indicator catalogue; alpha158: plus a close-only subset of Qlib's Alpha158 and
    # market-relative features (rolling beta, residual momentum against the equal-weight universe).
    features: Literal["basic", "alpha158"] = "basic"
    # 1: labels start a day later, log(close[t+1+h] / close[t+1]) (Qlib's one-day execution lag).
    label_lag: Literal[0, 1] = 0

    @field_validator("horizons")
    @classmethod
    def _positive_unique(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(h < 1 for h in value) or len(set(value)) != len(value):
            raise ValueError(f"horizons must be distinct positive trading-day counts, got {list(value)}")
        return tuple(sorted(value))
