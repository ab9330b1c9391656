"""Simple forecasters every network must beat, scored like the networks.

Each returns scores of shape (len(t), N, H) for date indices ``t``; a rule
baseline gives the same score for every horizon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.linear_model import Ridge

from rayfolio.training.metrics import daily_rank_ic

if TYPE_CHECKING:  # (importing training.train loads Ray Train: seconds a serving replica need not spend)
    from rayfolio.training.train import TrainingData

BASELINES = ("momentum_12_1", "reversal_5d", "ridge")  # the names they are scored under


def _feature(data: TrainingData, name: str, t: np.ndarray) -> np.ndarray:
    """Raw-scale ordering of one feature: the normaliser is monotone, so ranks match."""
    return data.scaled[t][..., data.feature_names.index(name)]


def momentum_12_1(data: TrainingData, t: np.ndarray) -> np.ndarray:
    """Winners keep winning: score = 12-1 month momentum."""
    return np.repeat(_feature(data, "mom_12_1", t)[..., None], len(data.horizons), axis=-1)


def reversal_5d(data: TrainingData, t: np.ndarray) -> np.ndarray:
    """Last week's losers bounce: score = -(5-day return)."""
    return np.repeat(-_feature(data, "ret_5", t)[..., None], len(data.horizons), axis=-1)


class RidgeBaseline:
    """Ridge regression from today's normalised features to standardised labels,
    one per horizon; alpha chosen on validation Rank IC."""

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)) -> None:
        self.alphas = alphas
        self.models: list[Ridge] = []
        self.alpha_: float | None = None

    def fit(self, data: TrainingData) -> RidgeBaseline:
        x = data.scaled[data.train_idx].reshape(-1, data.scaled.shape[-1])  # (T*N, F)
        best = -np.inf
        for alpha in self.alphas:
            models = []
            for h in range(len(data.horizons)):
                y = data.targets[data.train_idx][..., h].reshape(-1)
                ok = np.isfinite(y)
                models.append(Ridge(alpha=alpha).fit(x[ok], y[ok]))
            self.models = models
            score = np.nanmean(
                [np.nanmean(daily_rank_ic(self.predict(data, data.val_idx)[..., h], data.labels[data.val_idx][..., h]))
                 for h in range(len(data.horizons))]
            )  # fmt: skip
            if score > best:
                best, chosen, self.alpha_ = score, models, alpha
        self.models = chosen
        return self

    def predict(self, data: TrainingData, t: np.ndarray) -> np.ndarray:
        x = data.scaled[t]  # (B, N, F)
        flat = x.reshape(-1, x.shape[-1])
        return np.stack([m.predict(flat).reshape(x.shape[:2]) for m in self.models], axis=-1)
