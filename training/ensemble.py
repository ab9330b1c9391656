"""THE forecaster ensemble: one implementation behind every forecast rayfolio uses — the
backtest's forecast strategies (tilt, top-k), the agents' forecast features, the service's
expected returns and confidence, and the explainer (whose torch twin is tested equal to it).

Members are registered forecasters; a member may hold several seeds of its chosen
configuration, whose raw scores are averaged (``seeds_per_model``). Per horizon h:

- each member's scores are z-scored across assets and averaged with weights proportional to
  max(validation Rank IC, 0), equal weights when no member has a positive IC: the weights come
  from validation skill only (the registry's metrics), never from the test period;
- the expected h-day log return follows Grinold's rule alpha = IC x volatility x score: the
  trailing mean h-day return of the cross-section plus IC x the trailing cross-sectional
  dispersion of h-day returns x the ensemble z-score;
- confidence is the probability that the forecast's direction is right (the asset beats the
  cross-section's median over the next h days when z > 0, trails it when z < 0), calibrated on
  validation: the members' agreement ``|sum_m w_m z_m| / sum_m w_m |z_m|`` (1 when every member
  points the same way, 0 when they cancel) is cut into quantile buckets on the validation dates,
  each bucket's realised hit rate is measured there, made non-decreasing in agreement (pool
  adjacent violators: more agreement never earns less confidence), and that rate is the
  confidence of any forecast falling in the bucket. With one member agreement is always 1 and
  confidence is the validation hit rate.

A date's forecast depends only on data dated <= that date and is computed one date per model
call (a (1, W, N, F) window), so the same date gives bit-identical numbers whoever asks and
whatever else is asked at the same time (batched CPU kernels may sum in another order), and a
serving deployment can cache it per date.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR
from rayfolio.data.graph import correlation_neighbours, sector_neighbours
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.training.cards import ForecasterCard
from rayfolio.training.onnx_runtime import RUNTIMES, Runtime, onnx_models
from rayfolio.training.panel import Panel, windows
from rayfolio.training.registry import WEIGHTS, ModelRegistry, ModelVersion, RegistryError

CONFIDENCE_BUCKETS = 5


@dataclass(frozen=True)
class Forecaster:
    """One ensemble member: a registered forecaster, all its seeds, over one panel."""

    name: str
    version: str
    # The seeds of one configuration, their raw scores averaged: torch modules, or ONNX Runtime
    # sessions answering alike (training/onnx_runtime.py): (x, neighbours) -> (B, N, H).
    models: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...]
    window: int
    scaled: np.ndarray  # (T, N, F) float32: the panel under this model's own normaliser
    neighbours: np.ndarray  # (T, N, k) int64: its graph (self-loops for the sequence models, which ignore it)
    horizons: tuple[int, ...]
    val_rank_ic: np.ndarray  # (H,) from the registry's metrics

    @torch.no_grad()
    def scores(self, t: int) -> np.ndarray:
        """(N, H) float64 raw scores at date index t from the window ending at t."""
        x = torch.from_numpy(windows(self.scaled, np.array([t]), self.window))  # (1, W, N, F)
        graph = torch.from_numpy(self.neighbours[[t]])  # (1, N, k)
        return np.mean([m(x, graph)[0].double().numpy() for m in self.models], axis=0)


@dataclass(frozen=True)
class EnsembleForecast:
    date: np.datetime64
    horizons: tuple[int, ...]
    scores: dict[str, np.ndarray]  # member -> (N, H) raw scores
    z: np.ndarray  # (N, H) ensemble z-score
    expected_return: np.ndarray  # (N, H) expected h-day log return
    agreement: np.ndarray  # (N, H) in [0, 1]: the members' agreement on the direction
    confidence: np.ndarray  # (N, H) calibrated probability that the direction is right; NaN: not calibrated
    model_weights: dict[str, np.ndarray]  # member -> (H,)
    ic: np.ndarray  # (H,) the ensemble's weighted validation Rank IC


def member_weights(val_rank_ic: np.ndarray) -> np.ndarray:
    """(M, H) validation Rank ICs -> (M, H) weights: proportional to max(IC, 0), equal when none is positive."""
    positive = np.clip(val_rank_ic, 0.0, None)
    totals = positive.sum(axis=0)
    return np.where(totals > 0, positive / np.where(totals > 0, totals, 1.0), 1.0 / len(val_rank_ic))


def zscore(scores: np.ndarray) -> np.ndarray:
    """(..., N, H) -> z-scored across assets per horizon; 0 where all scores are equal."""
    sd = scores.std(axis=-2, keepdims=True)
    return np.where(sd > 0, (scores - scores.mean(axis=-2, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)


def combine(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, N, H) raw member scores and (M, H) weights -> the ensemble z (N, H) and agreement (N, H)."""
    z = zscore(scores)  # (M, N, H)
    ensemble = np.einsum("mh,mnh->nh", weights, z)
    magnitude = np.einsum("mh,mnh->nh", weights, np.abs(z))
    agreement = np.where(magnitude > 0, np.abs(ensemble) / np.where(magnitude > 0, magnitude, 1.0), 1.0)
    return ensemble, np.clip(agreement, 0.0, 1.0)


def direction_hits(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(D, N, H) z-scores and forward log returns -> 1.0 where the forecast's sign matched the asset's
    return against the cross-section's median, 0.0 where not, NaN where there is no label or z == 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dates without any label
        excess = labels - np.nanmedian(labels, axis=-2, keepdims=True)
    hit = (np.sign(z) == np.sign(excess)).astype(np.float64)
    return np.where(np.isfinite(excess) & (z != 0) & (excess != 0), hit, np.nan)


def _pool_adjacent_violators(rates: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``rates`` weighted by ``counts`` (isotonic regression)."""
    blocks = [[float(r), float(c), 1] for r, c in zip(rates, counts, strict=True)]  # value, weight, size
    merged: list[list[float]] = []
    for block in blocks:
        merged.append(block)
        while len(merged) > 1 and merged[-2][0] > merged[-1][0]:
            (v1, c1, n1), (v2, c2, n2) = merged[-2], merged.pop()
            total = c1 + c2
            merged[-1] = [(v1 * c1 + v2 * c2) / total if total > 0 else (v1 + v2) / 2, total, n1 + n2]
    return np.concatenate([np.full(int(n), v) for v, _, n in merged])


@dataclass(frozen=True)
class Calibration:
    """Agreement buckets per horizon and each one's validation hit rate (the confidence it earns)."""

    edges: np.ndarray  # (H, B-1) inner bucket edges on agreement, from validation quantiles
    hit_rate: np.ndarray  # (H, B) non-decreasing in agreement
    count: np.ndarray  # (H, B) validation (date, asset) forecasts per bucket

    @classmethod
    def fit(cls, z: np.ndarray, agreement: np.ndarray, labels: np.ndarray, buckets: int = CONFIDENCE_BUCKETS):
        """(D, N, H) validation z-scores, agreements and forward log returns."""
        hits = direction_hits(z, labels)
        edges, rates, counts = [], [], []
        for h in range(z.shape[-1]):
            a, hit = agreement[..., h].ravel(), hits[..., h].ravel()
            known = np.isfinite(hit)
            a, hit = a[known], hit[known]
            inner = np.unique(np.quantile(a, np.linspace(0, 1, buckets + 1)[1:-1])) if len(a) else np.array([])
            inner = np.pad(inner, (0, buckets - 1 - len(inner)), constant_values=np.inf)  # ties collapse buckets
            bucket = np.searchsorted(inner, a, side="right")
            count = np.bincount(bucket, minlength=buckets).astype(np.float64)
            total = np.bincount(bucket, weights=hit, minlength=buckets)
            # An empty bucket earns the overall rate (0.5 when there is nothing at all to learn from).
            overall = hit.mean() if len(hit) else 0.5
            rate = np.where(count > 0, total / np.where(count > 0, count, 1.0), overall)
            edges.append(inner)
            rates.append(_pool_adjacent_violators(rate, count))
            counts.append(count)
        return cls(np.array(edges), np.array(rates), np.array(counts))

    def confidence(self, agreement: np.ndarray) -> np.ndarray:
        """(..., H) agreements -> (..., H) calibrated hit rates."""
        out = np.empty(agreement.shape)
        for h in range(agreement.shape[-1]):
            out[..., h] = self.hit_rate[h][np.searchsorted(self.edges[h], agreement[..., h], side="right")]
        return out


def split_indices(panel: Panel, splitter: PurgedDateSplitter, split: str) -> np.ndarray:
    """The date indices of one split ("train", "validation", "test") of ``panel``."""
    return panel.date_index(splitter.split_dates(panel.dates)[split])


def forecast_dates(panel: Panel, splitter: PurgedDateSplitter) -> np.ndarray:
    """The date indices whose ensemble forecasts are out of sample: the validation split's first date on.
    (The confidence is calibrated on the validation split, ``split_indices(..., "validation")``.)"""
    return np.arange(int(split_indices(panel, splitter, "validation")[0]), len(panel.dates))


def load_forecasters(
    registry: ModelRegistry,
    panel: Panel,
    names: list[str] | None = None,
    versions: dict[str, str] | None = None,
    runtime: Runtime = "torch",
    threads: int = 1,
) -> list[Forecaster]:
    """Registered forecasters, checksums verified and cards validated before any weight is read:
    ``versions`` ({name: version}) exactly those; else the production versions of ``names``, else
    of every production forecaster. ``runtime`` "onnx" / "onnx-int8": each seed runs its exported
    ONNX graph in ONNX Runtime with ``threads`` intra-op threads (a version without one is refused
    by name); a GAT always runs in torch (its PyG scatter ops are not exported)."""
    from rayfolio.training.models import build_model  # here: PyG costs an ingress replica ~2 s to import

    if runtime not in RUNTIMES:
        raise RegistryError(f"unknown forecaster runtime {runtime!r}; runtimes: {', '.join(RUNTIMES)}")

    if versions:
        chosen = [registry.get(name, version) for name, version in versions.items()]
    elif names:
        chosen = [registry.get(name, stage="production") for name in names]
    else:
        chosen = registry.production("forecaster")
    if not chosen:
        raise RegistryError(f"no production forecaster in {registry.root}: run `rayfolio run` first")
    out = []
    for version in chosen:
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
        if card.symbols != tuple(str(s) for s in panel.symbols):
            raise RegistryError(
                f"{version.name} {version.version} was trained on {len(card.symbols)} symbols "
                f"({', '.join(card.symbols[:5])}...); this store has other symbols"
            )
        columns = [panel.feature_names.index(f) for f in card.feature_names]
        scaled = card.normalizer.normalizer().transform(panel.features[..., columns])
        neighbours = member_graph(card, panel)
        if runtime != "torch" and card.family != "gat":
            models = onnx_models(registry, version, len(seed_files(version)), runtime, threads)
        else:
            models = []
            for file in seed_files(version):
                model = build_model(card.family, card.model_kwargs())
                model.load_state_dict(registry.load_weights(version, file))
                models.append(model.eval())
        ic = {
            row["horizon"]: row["rank_ic"]
            for row in version.metrics.get("by_split_and_horizon", [])
            if row["split"] == "validation"
        }
        out.append(
            Forecaster(version.name, version.version, tuple(models), card.window, scaled, neighbours, panel.horizons,
                       np.array([ic.get(h, 0.0) for h in panel.horizons], dtype=np.float64))
        )  # fmt: skip
    return out


def member_graph(card: ForecasterCard, panel: Panel) -> np.ndarray:
    """(T, N, k) int64: the graph a member's models are called with. A GAT's: the past-only
    correlation graph plus same-sector peers. Every other family never reads it, so it gets
    self-loops of the same width instead of a graph that costs O(T N^2 L) per load (every replica,
    explanation, refresh and drift check loads forecasters): the same shape keeps one call
    signature, which an exported ONNX graph declares."""
    graph, (t_len, n) = card.graph, panel.features.shape[:2]
    with_sectors = panel.sectors is not None and graph.sector_k > 0
    if card.family != "gat":
        width = max(min(graph.k, n - 1), 0) + (graph.sector_k if with_sectors else 0)
        return np.broadcast_to(np.arange(n)[None, :, None], (t_len, n, width)).copy()
    returns = panel.features[..., panel.feature_names.index("ret_1")]
    neighbours = correlation_neighbours(returns, graph.k, graph.lookback)
    if with_sectors:
        by_sector = sector_neighbours(panel.sectors, graph.sector_k)
        neighbours = np.concatenate([neighbours, np.broadcast_to(by_sector, (t_len, *by_sector.shape))], axis=2)
    return neighbours


def seed_file(seed_index: int) -> str:
    """The weights file of a member's ``seed_index``-th seed (0: the search's chosen model)."""
    return WEIGHTS if seed_index == 0 else f"weights-seed{seed_index}.pt"


def seed_files(version: ModelVersion) -> list[str]:
    files = set(version.manifest.get("files", {}))
    count = 1
    while seed_file(count) in files:
        count += 1
    return [seed_file(i) for i in range(count)]


def _forecaster_card(version: ModelVersion) -> ForecasterCard:
    if not isinstance(version.card, ForecasterCard):
        raise RegistryError(f"{version.name} {version.version} is {version.card.kind!r}, not a forecaster")
    return version.card


class ForecastEnsemble:
    def __init__(self, forecasters: list[Forecaster], panel: Panel, calibration_dates: np.ndarray | None = None):
        """``calibration_dates``: the validation date indices the confidence is calibrated on; None leaves
        the confidence NaN (for callers that never read it, e.g. the explainer)."""
        self.forecasters, self.panel = forecasters, panel
        self.weights = member_weights(np.stack([f.val_rank_ic for f in forecasters]))  # (M, H)
        self.ic = np.clip((self.weights * np.stack([f.val_rank_ic for f in forecasters])).sum(axis=0), 0.0, None)
        # Realised h-day log returns known at each date: the sum of ret_1 over t-h+1..t.
        raw = panel.features[..., panel.feature_names.index("ret_1")].astype(np.float64)  # (T, N)
        cumulative = np.vstack([np.zeros((1, raw.shape[1])), np.cumsum(np.nan_to_num(raw), axis=0)])
        known = np.isfinite(raw) & (np.arange(len(raw))[:, None] >= np.array(panel.horizons).max())
        self._realised = {  # h -> (T, N); NaN where the asset has no price that day
            h: np.where(known, cumulative[1:] - np.roll(cumulative, h, axis=0)[1:], np.nan) for h in panel.horizons
        }
        self._combined: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.calibration: Calibration | None = None
        if calibration_dates is not None:
            dates = np.asarray(calibration_dates)
            dates = dates[dates >= self.min_history - 1]
            if len(dates) == 0:
                raise ValueError("no calibration date has enough history for the ensemble's windows")
            z, agreement = zip(*(self._combine(t) for t in dates.tolist()), strict=True)
            self.calibration = Calibration.fit(np.stack(z), np.stack(agreement), panel.labels[dates].astype(np.float64))

    @property
    def min_history(self) -> int:
        return max(f.window for f in self.forecasters)

    def member_scores(self, t: int) -> np.ndarray:
        """(M, N, H) every member's raw scores at date index t."""
        return np.stack([f.scores(t) for f in self.forecasters])

    def _combine(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, H) z and (N, H) agreement at t, kept: the backtest, calibration and report ask again."""
        if t not in self._combined:
            self._combined[t] = combine(self.member_scores(t), self.weights)
        return self._combined[t]

    def forecast(self, t: int) -> EnsembleForecast:
        """The ensemble at date index ``t`` from data dated <= t."""
        scores = self.member_scores(t)
        z, agreement = combine(scores, self.weights)
        self._combined.setdefault(t, (z, agreement))
        mean, dispersion = self._trailing(t)
        confidence = self.confidence(t, agreement)
        return EnsembleForecast(
            self.panel.dates[t], self.panel.horizons, {f.name: scores[m] for m, f in enumerate(self.forecasters)},
            z, mean + self.ic * dispersion * z, agreement, confidence,
            {f.name: self.weights[m] for m, f in enumerate(self.forecasters)}, self.ic,
        )  # fmt: skip

    def forecast_many(self, ts: list[int]) -> list[EnsembleForecast]:
        """Several dates (each computed alone: the numbers of a date never depend on its company)."""
        return [self.forecast(int(t)) for t in ts]

    def z_panel(self, ts: np.ndarray) -> np.ndarray:
        """(T, N, H) float64: the ensemble z on date indices ``ts``, NaN on every other date (the
        strategies' signal and the agents' forecast features; a date's value is what the service
        forecasts on it)."""
        out = np.full((len(self.panel.dates), len(self.panel.symbols), len(self.panel.horizons)), np.nan)
        for t in np.asarray(ts).tolist():
            if t >= self.min_history - 1:  # earlier dates have no full window: no forecast
                out[t] = self._combine(t)[0]
        return out

    def confidence(self, t: int, agreement: np.ndarray) -> np.ndarray:
        """(N, H) calibrated confidence of date index t's (N, H) agreement (NaN when uncalibrated)."""
        return self.calibration.confidence(agreement) if self.calibration else np.full(agreement.shape, np.nan)

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


def reliability_table(ensemble: ForecastEnsemble, ts: np.ndarray, horizon: int) -> pd.DataFrame:
    """Calibration checked out of sample (``ensemble``: a ``ForecastEnsemble`` or anything that answers
    like one, e.g. the walk-forward's): on date indices ``ts`` (the test period), per confidence
    level the ensemble gave (one per agreement bucket), the forecasts' count, the mean confidence
    and the realised hit rate of their direction against the cross-section's median."""
    if ensemble.calibration is None:
        raise ValueError("the ensemble is not calibrated: give it calibration_dates")
    h = ensemble.panel.horizons.index(horizon)
    ts = np.asarray(ts)
    ts = ts[ts >= ensemble.min_history - 1]
    z, agreement = (np.stack(a) for a in zip(*(ensemble._combine(int(t)) for t in ts), strict=True))
    hits = direction_hits(z[..., [h]], ensemble.panel.labels[ts][..., [h]].astype(np.float64))[..., 0].ravel()
    confidence = np.stack([ensemble.confidence(int(t), a) for t, a in zip(ts, agreement, strict=True)])[..., h].ravel()
    known = np.isfinite(hits)
    frame = pd.DataFrame({"confidence": confidence[known], "hit": hits[known]})
    table = frame.groupby("confidence")["hit"].agg(["count", "mean"]).reset_index()
    table.columns = ["confidence (validation hit rate)", "forecasts", "realised hit rate"]
    return table
