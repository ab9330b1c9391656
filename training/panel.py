"""Dense (dates x assets x features) tensors from the feature store, the
normaliser (fitted on the training window, or cross-sectional ranks), and the
windows models read.

A sample is one date t: the feature window t-W+1..t of every asset, shape
(W, N, F), and the labels at t, shape (N, H). Windows end at t, so a sample
never sees a price after t; labels are used only as targets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from rayfolio.data.relative import RELATIVE_NAMES, relative_features
from rayfolio.data.store import FeatureStore

NormalizeKind = Literal["zscore", "rank"]


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
    def from_frame(
        cls,
        frame: pd.DataFrame,
        feature_names: tuple[str, ...],
        horizons: tuple[int, ...],
        *,
        relative: bool = False,
    ) -> Panel:
        """Dense arrays of the store's rows; ``relative`` appends the market-relative features
        (``rayfolio.data.relative``: beta, residual momentum, excess return) after ``feature_names``."""
        frame = frame.sort_values(["date", "symbol"])
        dates = np.sort(frame["date"].unique()).astype("datetime64[D]")
        symbols = np.sort(frame["symbol"].unique()).astype(str)
        t = np.searchsorted(dates, frame["date"].to_numpy().astype("datetime64[D]"))
        n = np.searchsorted(symbols, frame["symbol"].to_numpy().astype(str))

        def dense(columns: list[str]) -> np.ndarray:
            out = np.full((len(dates), len(symbols), len(columns)), np.nan, dtype=np.float32)
            out[t, n] = frame[columns].to_numpy(dtype=np.float32)
            return out

        features, names = dense(list(feature_names)), tuple(feature_names)
        if relative:
            # From float64 ret_1 (the dense features are float32): (T, N) -> (T, N, 4).
            log_returns = np.full((len(dates), len(symbols)), np.nan)
            log_returns[t, n] = frame["ret_1"].to_numpy(dtype=np.float64)
            features = np.concatenate([features, relative_features(log_returns).astype(np.float32)], axis=-1)
            names = (*names, *RELATIVE_NAMES)
        labels = dense([f"label_fwd_{h}d" for h in horizons])
        one_day = np.full((len(dates), len(symbols)), np.nan)
        # ret_1 at t+1 is the log return from t to t+1 on each symbol's own calendar.
        next_log = frame.groupby("symbol", sort=False)["ret_1"].shift(-1).to_numpy()
        one_day[t, n] = np.expm1(next_log)
        sectors = None
        if "sector" in frame.columns:
            sectors = frame.groupby("symbol")["sector"].first().reindex(symbols).to_numpy().astype(str)
        return cls(dates, symbols, names, tuple(horizons), features, labels, one_day, sectors)

    @classmethod
    def from_store(cls, store: FeatureStore) -> Panel:
        """The store's features, then its cross-sectional ones (an ``alpha158`` store's market-relative features)."""
        relative = bool(store.cross_sectional_feature_names)
        return cls.from_frame(store.to_pandas(), store.feature_names, store.horizons, relative=relative)

    def daily_returns(self) -> np.ndarray:
        """(T, N) float64 simple return from t-1 to t (from the stored ret_1), 0 where unknown."""
        log_1 = self.features[..., self.feature_names.index("ret_1")].astype(np.float64)
        return np.nan_to_num(np.expm1(log_1), nan=0.0)

    def date_index(self, dates: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.dates, np.asarray(dates).astype("datetime64[D]"))


@dataclass(frozen=True)
class Normalizer:
    """Per-feature scaling of raw features (..., N, F), of one of two kinds.

    zscore: winsorise at the training window's 1% / 99% quantiles, then
    standardise with its mean and std (all fitted on training dates only).
    rank: each feature's cross-sectional rank per date mapped to [-1, 1]
    (Gu, Kelly and Xiu 2020): nothing fitted, a date's values depend on that
    date's cross-section only. The four arrays then hold the range ranks have
    by construction (-1, 1, centre 0, scale 1), one value per feature as the
    cards expect, and are not applied.

    Missing values become 0 after scaling (the training mean, or the middle
    rank), so a missing feature carries no signal rather than an extreme one.
    """

    lower: np.ndarray  # (F,)
    upper: np.ndarray  # (F,)
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    kind: NormalizeKind = "zscore"

    @classmethod
    def fit(cls, features: np.ndarray, quantile: float = 0.01, *, kind: NormalizeKind = "zscore") -> Normalizer:
        """``features``: (T_train, N, F) of the training window only."""
        n_features = features.shape[-1]
        if kind == "rank":
            return cls(np.full(n_features, -1.0), np.ones(n_features), np.zeros(n_features), np.ones(n_features), kind)
        flat = features.reshape(-1, n_features).astype(np.float64)
        lower = np.nanquantile(flat, quantile, axis=0)
        upper = np.nanquantile(flat, 1 - quantile, axis=0)
        clipped = np.clip(flat, lower, upper)
        std = np.nanstd(clipped, axis=0)
        return cls(lower, upper, np.nanmean(clipped, axis=0), np.where(std > 0, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """(..., N, F) raw -> (..., N, F) float32 scaled, 0 where missing."""
        if self.kind == "rank":
            return np.nan_to_num(cross_sectional_rank(features), nan=0.0)
        scaled = (np.clip(features, self.lower, self.upper) - self.mean) / self.std
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, list[float] | str]:
        return {"kind": self.kind, **{k: getattr(self, k).tolist() for k in ("lower", "upper", "mean", "std")}}

    @classmethod
    def from_dict(cls, values: dict) -> Normalizer:
        """From ``to_dict``'s output; one without ``kind`` (written before ranks existed) is a zscore."""
        stats = {k: np.asarray(values[k], dtype=np.float64) for k in ("lower", "upper", "mean", "std")}
        return cls(**stats, kind=values.get("kind", "zscore"))


def cross_sectional_rank(features: np.ndarray) -> np.ndarray:
    """Each feature's rank across assets per date, mapped to [-1, 1]: (..., N, F) -> (..., N, F) float32.

    Ties share their average rank; missing values stay NaN and are left out of
    the count; a date with a single asset gives it 0 (the middle).
    """
    out = np.empty(features.shape, dtype=np.float32)
    # One feature at a time: rankdata on the whole (T, N, F) block would hold several float64 copies of it.
    for f in range(features.shape[-1]):
        values = features[..., f]  # (..., N)
        ranks = rankdata(values, axis=-1, nan_policy="omit")  # 1..n, NaN where missing
        n = (~np.isnan(values)).sum(axis=-1, keepdims=True)  # what rankdata ranks: +-inf included
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., f] = np.where(n > 1, 2.0 * (ranks - 1.0) / (n - 1) - 1.0, np.where(np.isnan(ranks), np.nan, 0.0))
    return out


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
