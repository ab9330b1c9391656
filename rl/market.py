"""The market the allocators trade: dense daily returns and standardised
features, precomputed once so that an environment step only indexes arrays.

Time convention (shared by the environment and the backtest): a decision at
date index t is taken at t's close with data dated <= t, and earns the returns
of dates t+1 .. t+k. ``returns[t]`` is the simple return from t-1 to t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStoreError
from rayfolio.rl.config import EnvConfig
from rayfolio.training.panel import Normalizer, Panel


def tradable_at(first: np.ndarray, last: np.ndarray, n_dates: int, t: int, horizon: int) -> np.ndarray:
    """(N,) bool: assets listed from ``first`` to ``last`` (N,) that have a price at t and are still
    listed at t + horizon (or at the last of ``n_dates``, when the holding period runs past it)."""
    return (first <= t) & (last >= min(t + horizon, n_dates - 1))


@dataclass(frozen=True)
class MarketData:
    dates: np.ndarray  # (T,) datetime64[D]
    symbols: np.ndarray  # (N,) str
    feature_names: tuple[str, ...]
    returns: np.ndarray  # (T, N) float64, simple return t-1 -> t; 0 where the asset has no price
    features: np.ndarray  # (T, N, F) float32, standardised on training dates, 0 where missing
    first: np.ndarray  # (N,) first date index with a price
    last: np.ndarray  # (N,) last date index with a price
    normalizer: Normalizer
    splits: dict[str, tuple[int, int]]  # split -> (first, last) date index, inclusive

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @classmethod
    def from_panel(
        cls,
        panel: Panel,
        splitter: PurgedDateSplitter,
        env: EnvConfig,
        normalizer: Normalizer | None = None,
        forecast_z: np.ndarray | None = None,
    ) -> MarketData:
        """The market ``env`` sees. ``normalizer``: a stored agent's own; None fits
        one on the agents' training dates. ``forecast_z``: (T, N, H) the forecaster
        ensemble's z-scores (training/ensemble.py ``z_panel``; NaN where none), needed
        when ``env.forecast_features`` is on."""
        feature_names = env.features
        missing = [f for f in feature_names if f not in panel.feature_names]
        if missing:
            raise FeatureStoreError(
                f"environment features {missing} are not in the feature store "
                f"(it has: {', '.join(panel.feature_names)})"
            )
        if "ret_1" not in panel.feature_names:
            raise FeatureStoreError("the feature store has no ret_1 column: the allocators need daily returns")
        columns = [panel.feature_names.index(f) for f in feature_names]
        raw = panel.features[..., columns]
        first, last = cls.listing(panel)
        parts = splitter.split_dates(panel.dates)
        splits = {}
        for name, dates in parts.items():
            idx = panel.date_index(dates)
            splits[name] = (int(idx[0]), int(idx[-1]))
        names = tuple(feature_names)
        if env.forecast_features:
            if forecast_z is None:
                raise FeatureStoreError(
                    "forecast_features is on but there is no forecaster ensemble: register forecasters "
                    "first (rayfolio run) or turn it off"
                )
            raw = np.concatenate([raw, forecast_z.astype(np.float32)], axis=-1)
            names += tuple(f"forecast_{h}d" for h in panel.horizons)
            # Out-of-sample forecasts start with validation: the agents learn on its
            # first part and are chosen on the rest; holding periods never cross the cut.
            a, b = splits["validation"]
            cut = a + round((b - a) * env.forecast_train_fraction)
            splits = {"train": (a, cut), "validation": (cut + 1, b), "test": splits["test"]}
        if normalizer is None:
            normalizer = Normalizer.fit(raw[splits["train"][0] : splits["train"][1] + 1])
        return cls(
            dates=panel.dates,
            symbols=panel.symbols,
            feature_names=names,
            returns=panel.daily_returns(),
            features=normalizer.transform(raw),
            first=first,
            last=last,
            normalizer=normalizer,
            splits=splits,
        )

    @staticmethod
    def listing(panel: Panel) -> tuple[np.ndarray, np.ndarray]:
        """(N,) first and (N,) last date index with a price (len(dates) and -1 for an asset with none)."""
        present = np.isfinite(panel.features).any(axis=-1)  # (T, N): the asset has a row that day
        has = present.any(axis=0)
        first = np.where(has, present.argmax(axis=0), len(panel.dates))
        last = np.where(has, len(panel.dates) - 1 - present[::-1].argmax(axis=0), -1)
        return first, last

    def tradable(self, t: int, horizon: int = 1) -> np.ndarray:
        """(N,) bool: assets with a price at t and still listed at t + horizon."""
        return tradable_at(self.first, self.last, len(self.dates), t, horizon)

    def growth(self, horizon: int) -> np.ndarray:
        """(T, N+1) gross growth of one unit held from t to t+horizon, cash last (1.0).

        Rows whose horizon runs past the panel's end are NaN: no decision may use them.
        """
        log_growth = np.log1p(self.returns)
        cumulative = np.vstack([np.zeros((1, self.n_assets)), np.cumsum(log_growth, axis=0)])  # (T+1, N)
        out = np.full((len(self.dates), self.n_assets + 1), np.nan)
        span = len(self.dates) - horizon
        if span > 0:
            out[:span, :-1] = np.exp(cumulative[1 + horizon : 1 + horizon + span] - cumulative[1 : 1 + span])
            out[:span, -1] = 1.0
        return out
