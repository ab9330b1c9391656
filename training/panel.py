"""Dense (dates x assets x features) tensors from the feature store, the
training-window normaliser, and the windows models read.

A sample is one date t: the feature window t-W+1..t of every asset, shape
(W, N, F), and the labels at t, shape (N, H). Windows end at t, so a sample
never sees a price after t; labels are used only as targets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rayfolio.data.store import FeatureStore


@dataclass(frozen=True)
class Panel:
    """The store as dense arrays; NaN where an asset has no row that day."""

    dates: np.ndarray  # (T,) datetime64[D]
    symbols: np.ndarray  # (N,) str
    feature_names: tuple[str, ...]
    horizons: tuple[int, ...]
    features: np.ndarray  # (T, N, F) float32, raw store values
    labels: np.ndarray  # (T, N, H) float32, forward log returns
    next_returns: np.ndarray  # (T, N) float64, simple return from t to t+1
    sectors: np.ndarray | None = None  # (N,) str when the store carries a sector column

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, feature_names: tuple[str, ...], horizons: tuple[int, ...]) -> Panel:
        frame = frame.sort_values(["date", "symbol"])
        dates = np.sort(frame["date"].unique()).astype("datetime64[D]")
        symbols = np.sort(frame["symbol"].unique()).astype(str)
        t = np.searchsorted(dates, frame["date"].to_numpy().astype("datetime64[D]"))
        n = np.searchsorted(symbols, frame["symbol"].to_numpy().astype(str))

        def dense(columns: list[str]) -> np.ndarray:
            out = np.full((len(dates), len(symbols), len(columns)), np.nan, dtype=np.float32)
            out[t, n] = frame[columns].to_numpy(dtype=np.float32)
            return out

        labels = dense([f"label_fwd_{h}d" for h in horizons])
        one_day = np.full((len(dates), len(symbols)), np.nan)
        # ret_1 at t+1 is the log return from t to t+1 on each symbol's own calendar.
        next_log = frame.groupby("symbol", sort=False)["ret_1"].shift(-1).to_numpy()
        one_day[t, n] = np.expm1(next_log)
        sectors = None
        if "sector" in frame.columns:
            sectors = frame.groupby("symbol")["sector"].first().reindex(symbols).to_numpy().astype(str)
        return cls(
            dates, symbols, tuple(feature_names), tuple(horizons), dense(list(feature_names)), labels, one_day, sectors
        )

    @classmethod
    def from_store(cls, store: FeatureStore) -> Panel:
        return cls.from_frame(store.to_pandas(), store.feature_names, store.horizons)

    def daily_returns(self) -> np.ndarray:
        """(T, N) float64 simple return from t-1 to t (from the stored ret_1), 0 where unknown."""
        log_1 = self.features[..., self.feature_names.index("ret_1")].astype(np.float64)
        return np.nan_to_num(np.expm1(log_1), nan=0.0)

    def date_index(self, dates: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.dates, np.asarray(dates).astype("datetime64[D]"))


@dataclass(frozen=True)
class Normalizer:
    """Per-feature winsorise-then-standardise, fitted on training dates only.

    Missing values become 0 (the training mean) after scaling, so a missing
    feature carries no signal rather than an extreme one.
    """

    lower: np.ndarray  # (F,)
    upper: np.ndarray  # (F,)
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)

    @classmethod
    def fit(cls, features: np.ndarray, quantile: float = 0.01) -> Normalizer:
        """``features``: (T_train, N, F) of the training window only."""
        flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
        lower = np.nanquantile(flat, quantile, axis=0)
        upper = np.nanquantile(flat, 1 - quantile, axis=0)
        clipped = np.clip(flat, lower, upper)
        std = np.nanstd(clipped, axis=0)
        return cls(lower, upper, np.nanmean(clipped, axis=0), np.where(std > 0, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        scaled = (np.clip(features, self.lower, self.upper) - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("lower", "upper", "mean", "std")}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> Normalizer:
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in values.items()})


def standardize_cross_section(labels: np.ndarray) -> np.ndarray:
    """Labels z-scored across assets per date and horizon; (..., N, H) -> same.

    Targets become "better or worse than today's other assets", which is what
    a ranking model needs and what removes the market's common move.
    """
    with warnings.catch_warnings():  # dates with no label at all (the panel's last h days) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(labels, axis=-2, keepdims=True)
        std = np.nanstd(labels, axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, (labels - mean) / std, np.nan).astype(np.float32)


def sample_dates(panel: Panel, dates: np.ndarray, window: int) -> np.ndarray:
    """Indices t of ``dates`` with a full window behind them and some label."""
    idx = panel.date_index(dates)
    has_label = np.isfinite(panel.labels[idx]).any(axis=(1, 2))
    return idx[(idx >= window - 1) & has_label]


def windows(scaled: np.ndarray, t: np.ndarray, window: int) -> np.ndarray:
    """Feature windows ending at each index in ``t``: (B,) -> (B, W, N, F)."""
    if len(t) and int(np.min(t)) < window - 1:
        # numpy would wrap a negative index around to the panel's end: look-ahead.
        raise ValueError(f"date index {int(np.min(t))} has fewer than {window} days of history")
    offsets = np.arange(-window + 1, 1)
    return scaled[t[:, None] + offsets[None, :]]
