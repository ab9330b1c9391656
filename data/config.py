"""Typed configuration of the data stage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rayfolio.data.synthetic import SyntheticPanelConfig


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_assets: int = Field(50, ge=1)
    n_days: int = Field(2520, ge=2)
    seed: int = 0

    def to_config(self) -> SyntheticPanelConfig:
        return SyntheticPanelConfig(n_assets=self.n_assets, n_days=self.n_days, seed=self.seed)


class DataConfig(BaseModel):
    """Where prices come from and which label horizons to build."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field("sp500", description="'sp500', 'synthetic', or a file/directory path or URI")
    horizons: tuple[int, ...] = (5, 20, 60)
    synthetic: SyntheticOptions = SyntheticOptions()

    @field_validator("horizons")
    @classmethod
    def _positive_unique(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(h < 1 for h in value) or len(set(value)) != len(value):
            raise ValueError(f"horizons must be distinct positive trading-day counts, got {list(value)}")
        return tuple(sorted(value))
