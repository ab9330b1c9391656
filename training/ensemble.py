"""The forecaster ensemble behind recommendations: the registry's production
forecasters, combined per horizon with weights from their validation Rank IC.

Forecasts for a date depend only on market data dated <= that date, so a
serving deployment computes them once per date and caches them.

Per horizon h, each model's scores are z-scored across assets and averaged
with weights proportional to max(validation Rank IC, 0) (equal weights when
no model has a positive IC). The expected h-day log return follows Grinold's
rule alpha = IC x volatility x score: the trailing mean h-day return of the
cross-section plus IC x the trailing cross-sectional dispersion of h-day
returns x the ensemble z-score. The confidence is 1 / (1 + the weighted
standard deviation of the models' z-scores): 1 when the models agree.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR
from rayfolio.data.graph import correlation_neighbours, sector_neighbours
from rayfolio.training.cards import ForecasterCard
from rayfolio.training.panel import Panel, windows
from rayfolio.training.registry import ModelRegistry, ModelVersion, RegistryError


@dataclass(frozen=True)
class Forecaster:
    name: str
    version: str
    model: torch.nn.Module
    window: int
    scaled: np.ndarray  # (T, N, F) float32: the panel under this model's own normaliser
    neighbours: np.ndarray  # (T, N, k) int64: its graph (unused by sequence models)
    horizons: tuple[int, ...]
    val_rank_ic: np.ndarray  # (H,) from the registry's metrics


@dataclass(frozen=True)
class EnsembleForecast:
    date: np.datetime64
    horizons: tuple[int, ...]
    scores: dict[str, np.ndarray]  # model -> (N, H) raw scores
    z: np.ndarray  # (N, H) ensemble z-score
    expected_return: np.ndarray  # (N, H) expected h-day log return
    confidence: np.ndarray  # (N, H) in (0, 1]
    model_weights: dict[str, np.ndarray]  # model -> (H,)
    ic: np.ndarray  # (H,) the ensemble's weighted validation Rank IC


def load_forecasters(registry: ModelRegistry, panel: Panel, names: list[str] | None = None) -> list[Forecaster]:
    """Production versions (of ``names``, else every production forecaster), checksums
    verified and cards validated before any weight is read."""
    from rayfolio.training.models import build_model  # here: PyG costs an ingress replica ~2 s to import

    versions = (
        [registry.get(name, stage="production") for name in names] if names else registry.production("forecaster")
    )
    if not versions:
        raise RegistryError(f"no production forecaster in {registry.root}: run `rayfolio run` first")
    out = []
    for version in versions:
        card = _forecaster_card(version)
        missing = sorted(set(card.feature_names) - set(panel.feature_names))
        if missing:
            raise RegistryError(
                f"{version.name} {version.version} needs features the store lacks: {', '.join(missing)}"
            )
        if card.horizons != panel.horizons:
            raise RegistryError(
                f"{version.name} {version.version} forecasts horizons {card.horizons}, the store has {panel.horizons}"
            )
        columns = [panel.feature_names.index(f) for f in card.feature_names]
        scaled = card.normalizer.normalizer().transform(panel.features[..., columns])
        returns = panel.features[..., panel.feature_names.index("ret_1")]
        graph = card.graph
        neighbours = correlation_neighbours(returns, graph.k, graph.lookback)
        if panel.sectors is not None and graph.sector_k > 0:
            by_sector = sector_neighbours(panel.sectors, graph.sector_k)
            neighbours = np.concatenate([neighbours, np.broadcast_to(by_sector, (len(neighbours), *by_sector.shape))],
                                        axis=2)  # fmt: skip
        model = build_model(card.family, card.model_kwargs())
        model.load_state_dict(registry.load_weights(version))
        ic = {
            row["horizon"]: row["rank_ic"]
            for row in version.metrics.get("by_split_and_horizon", [])
            if row["split"] == "validation"
        }
        out.append(
            Forecaster(version.name, version.version, model.eval(), card.window, scaled, neighbours, panel.horizons,
                       np.array([ic.get(h, 0.0) for h in panel.horizons], dtype=np.float64))
        )  # fmt: skip
    return out


def _forecaster_card(version: ModelVersion) -> ForecasterCard:
    if not isinstance(version.card, ForecasterCard):
        raise RegistryError(f"{version.name} {version.version} is {version.card.kind!r}, not a forecaster")
    return version.card


class ForecastEnsemble:
    def __init__(self, forecasters: list[Forecaster], panel: Panel) -> None:
        self.forecasters, self.panel = forecasters, panel
        weights = np.stack([np.clip(f.val_rank_ic, 0.0, None) for f in forecasters])  # (M, H)
        totals = weights.sum(axis=0)
        self.weights = np.where(totals > 0, weights / np.where(totals > 0, totals, 1.0), 1.0 / len(forecasters))
        self.ic = np.clip((self.weights * np.stack([f.val_rank_ic for f in forecasters])).sum(axis=0), 0.0, None)
        # Realised h-day log returns known at each date: the sum of ret_1 over t-h+1..t.
        raw = panel.features[..., panel.feature_names.index("ret_1")].astype(np.float64)  # (T, N)
        cumulative = np.vstack([np.zeros((1, raw.shape[1])), np.cumsum(np.nan_to_num(raw), axis=0)])
        known = np.isfinite(raw) & (np.arange(len(raw))[:, None] >= np.array(panel.horizons).max())
        self._realised = {  # h -> (T, N); NaN where the asset has no price that day
            h: np.where(known, cumulative[1:] - np.roll(cumulative, h, axis=0)[1:], np.nan) for h in panel.horizons
        }

    @property
    def min_history(self) -> int:
        return max(f.window for f in self.forecasters)

    def forecast(self, t: int) -> EnsembleForecast:
        """The ensemble at date index ``t`` from data dated <= t."""
        return self.forecast_many([t])[0]

    @torch.no_grad()
    def forecast_many(self, ts: list[int]) -> list[EnsembleForecast]:
        """One model call per forecaster for all of ``ts`` (the batched path)."""
        t = np.asarray(ts)
        scores = {}
        for f in self.forecasters:
            x = torch.from_numpy(windows(f.scaled, t, f.window))  # (B, W, N, F)
            scores[f.name] = f.model(x, torch.from_numpy(f.neighbours[t])).float().numpy()  # (B, N, H)
        out = []
        for b, date_index in enumerate(ts):
            per_model = {name: s[b] for name, s in scores.items()}
            z = np.stack([_zscore(s) for s in per_model.values()])  # (M, N, H)
            ensemble = np.einsum("mh,mnh->nh", self.weights, z)
            spread = np.sqrt(np.einsum("mh,mnh->nh", self.weights, (z - ensemble) ** 2))
            mean, dispersion = self._trailing(date_index)
            out.append(
                EnsembleForecast(
                    self.panel.dates[date_index], self.panel.horizons, per_model, ensemble,
                    mean + self.ic * dispersion * ensemble, 1.0 / (1.0 + spread),
                    {f.name: self.weights[m] for m, f in enumerate(self.forecasters)}, self.ic,
                )
            )  # fmt: skip
        return out

    def _trailing(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(H,) mean and (H,) mean cross-sectional std of realised h-day log returns over the last trading year."""
        means, spreads = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # days before any realised return
            for h in self.panel.horizons:
                window = self._realised[h][max(0, t - TRADING_DAYS_PER_YEAR + 1) : t + 1]
                means.append(np.nanmean(window) if np.isfinite(window).any() else 0.0)
                spreads.append(np.nanmean(np.nanstd(window, axis=1)) if np.isfinite(window).any() else 0.0)
        return np.array(means), np.array(spreads)


def _zscore(scores: np.ndarray) -> np.ndarray:
    """(N, H) -> z-scored across assets per horizon; 0 where all scores are equal."""
    sd = scores.std(axis=0, keepdims=True)
    return np.where(sd > 0, (scores - scores.mean(axis=0, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)
