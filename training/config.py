"""Typed configuration of forecaster training and search: plain pydantic models, light to
import, so a run config validates before torch or Ray is loaded."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rayfolio.data.conventions import DEFAULT_COST_BPS

Family = Literal["lstm", "transformer", "gat"]


class TrainConfig(BaseModel):
    """One training run of one model family (one Tune trial is one of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Family = "lstm"
    hidden: int = Field(32, ge=4)
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    heads: int = Field(2, ge=1)  # transformer and GAT
    window: int = Field(30, ge=2)  # trading days of features per sample
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)  # dates per batch (each date carries every asset)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    loss: Literal["mse", "rank"] = "mse"
    # zscore: winsorise + standardise with training-window statistics; rank: each feature's
    # cross-sectional rank per date, mapped to [-1, 1] (Gu, Kelly and Xiu 2020): no fitted statistics.
    normalize: Literal["zscore", "rank"] = "zscore"
    patience: int = Field(3, ge=1)  # epochs without a better validation Rank IC before stopping
    train_stride: int = Field(1, ge=1)  # keep every n-th training date (quick runs)
    # A budget that must shrink with the universe: each date carries every asset, so an epoch over the
    # same dates costs N times more at N assets. With a cap, the date stride grows until an epoch holds
    # at most this many (date, asset) samples: the same cost per epoch at 400 assets as at 100.
    asset_days_per_epoch: int | None = Field(None, ge=1)
    graph_k: int = Field(4, ge=1)
    graph_lookback: int = Field(60, ge=5)
    graph_sector_k: int = Field(2, ge=0)  # same-sector neighbours, when the data has a sector column
    seed: int = 0

    def date_stride(self, n_dates: int, n_assets: int) -> int:
        """Every how many training dates to keep: ``train_stride``, or more when ``asset_days_per_epoch``
        caps an epoch's (date, asset) samples."""
        if self.asset_days_per_epoch is None:
            return self.train_stride
        return max(self.train_stride, math.ceil(n_dates * n_assets / self.asset_days_per_epoch))

    def model_kwargs(self, n_features: int, n_horizons: int) -> dict:
        kwargs = {
            "n_features": n_features,
            "n_horizons": n_horizons,
            "hidden": self.hidden,
            "layers": self.layers,
            "dropout": self.dropout,
        }
        if self.family in ("transformer", "gat"):
            kwargs["heads"] = self.heads
        return kwargs


class ScalingOptions(BaseModel):
    """How Ray Train spreads one run: workers, CPUs each, GPUs when present."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_workers: int = Field(2, ge=1)
    # Fractional CPUs leave Ray Data one whole CPU to feed the workers: on 2 CPUs,
    # 2 x 0.45 plus a Tune trial's token 0.01 leaves 1.09 (at 2 x 0.5 it would hang).
    cpus_per_worker: float = Field(0.45, gt=0)
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    # PACK keeps a run's workers on as few nodes as fit (fast collectives); SPREAD puts
    # them on different nodes where it can (one node lost costs one worker, not the run).
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    max_failures: int = Field(2, ge=0)  # worker crashes survived by resuming from the last checkpoint


class SearchConfig(BaseModel):
    """Search space and budget of one family's search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: int = Field(4, ge=1)
    max_concurrent_trials: int | None = None  # None: as many as the cluster's CPUs hold
    grace_period: int = Field(1, ge=1)  # epochs before ASHA may stop a trial
    lr: tuple[float, float] = (3e-4, 3e-3)  # log-uniform
    hidden: tuple[int, ...] = (16, 32)
    layers: tuple[int, ...] = (1, 2)
    dropout: tuple[float, float] = (0.0, 0.3)
    window: tuple[int, ...] = (20, 40)
    seed: int = 0


class ForecastersConfig(BaseModel):
    """What the main job trains: families, base training config, search budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    families: tuple[Family, ...] = ("lstm", "transformer", "gat")
    train: TrainConfig = TrainConfig(
        hidden=16, window=20, epochs=3, train_stride=5, patience=2, asset_days_per_epoch=40_000
    )
    search: SearchConfig = SearchConfig(num_samples=2, hidden=(16, 32), layers=(1,), window=(20, 40))
    scaling: ScalingOptions = ScalingOptions()
    cost_bps: float = Field(DEFAULT_COST_BPS, ge=0)
    # Seeds of each family's chosen configuration, trained after the search and averaged into one
    # ensemble member (raw scores averaged before the z-score): a seed's luck is not skill.
    seeds_per_model: int = Field(1, ge=1)
