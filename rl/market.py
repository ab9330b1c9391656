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
from rayfolio.training.panel import Normalizer, Panel


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
        feature_names: tuple[str, ...],
        normalizer: Normalizer | None = None,
    ) -> MarketData:
        """``normalizer``: a stored agent's own; None fits one on the training dates."""
        missing = [f for f in feature_names if f not in panel.feature_names]
        if missing:
            raise ValueError(
                f"environment features {missing} are not in the feature store "
                f"(it has: {', '.join(panel.feature_names)})"
            )
        if "ret_1" not in panel.feature_names:
            raise ValueError("the feature store has no ret_1 column: the allocators need daily returns")
        columns = [panel.feature_names.index(f) for f in feature_names]
        raw = panel.features[..., columns]
        log_1 = panel.features[..., panel.feature_names.index("ret_1")].astype(np.float64)
        present = np.isfinite(panel.features).any(axis=-1)  # (T, N): the asset has a row that day
        has = present.any(axis=0)
        first = np.where(has, present.argmax(axis=0), len(panel.dates))
        last = np.where(has, len(panel.dates) - 1 - present[::-1].argmax(axis=0), -1)
        parts = splitter.split_dates(panel.dates)
        splits = {}
        for name, dates in parts.items():
            idx = panel.date_index(dates)
            splits[name] = (int(idx[0]), int(idx[-1]))
        if normalizer is None:
            normalizer = Normalizer.fit(raw[splits["train"][0] : splits["train"][1] + 1])
        return cls(
            dates=panel.dates,
            symbols=panel.symbols,
            feature_names=tuple(feature_names),
            returns=np.nan_to_num(np.expm1(log_1), nan=0.0),
            features=normalizer.transform(raw),
            first=first,
            last=last,
            normalizer=normalizer,
            splits=splits,
        )

    def tradable(self, t: int, horizon: int = 1) -> np.ndarray:
        """(N,) bool: assets with a price at t and still listed at t + horizon
        (or at the panel's last date, when the holding period runs past it)."""
        return (self.first <= t) & (self.last >= min(t + horizon, len(self.dates) - 1))

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
