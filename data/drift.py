"""Drift of a series between a reference window and a later window: the population stability
index (PSI) on the reference's deciles, the two-sample KS statistic, and PSI thresholds
calibrated on the reference's own 63-trading-day chunks. numpy and scipy only.

A series is any (T, M) array on the trading calendar, NaN where there is no value: a stored
feature (T dates x N symbols), an ensemble forecast, or the served weights of the recommendations
made on each date (padded with NaN). Its distribution is the cross-section pooled over the
window's dates. Every function takes extra leading axes (say seeds), so many series are assessed
in one call.

PSI = sum_b (a_b - e_b) ln(a_b / e_b) over 10 bins whose 9 inner edges are the reference's deciles;
e_b and a_b are the reference's and the window's shares, each floored at ``DriftConfig.psi_floor``
(1e-4: a bin empty in one sample then adds a large but finite amount, never inf). Bins are closed
on the right: ties at an edge fall into its lower bin, so a point mass (a constant feature, zero
weights) fills one bin, and repeated edges leave bins empty in both samples, where the floored
shares are equal and add exactly 0.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import ks_2samp, norm

DECILES = np.arange(1, 10) / 10  # (9,) inner bin edges, as reference quantiles
PSI_FLOOR = 1e-4  # the smallest share a bin counts with
LEVELS = ("info", "warning", "critical")  # index = the level's code (the gauge's value)
INSUFFICIENT = "insufficient data"  # too few values to compare: no PSI, no alarm


@dataclass(frozen=True)
class DriftConfig:
    """How drift is measured and when it alarms.

    The configured ``warning`` / ``critical`` PSI (0.1 / 0.25, the usual rule of thumb) are floors:
    each series' thresholds are raised to what its own reference window shows without any change
    (``assess``). ``min_values``: fewer finite values than this in the reference or the window read
    "insufficient data".
    """

    warning: float = 0.1
    critical: float = 0.25
    psi_floor: float = PSI_FLOOR  # the smallest bin share counted: an empty bin adds a finite amount
    chunk_days: int = 63  # a quarter of trading days
    chunk_step: int = 21  # chunks start every month of trading days (they overlap)
    warning_quantile: float = 0.995  # of the log-normal fitted to the chunk PSIs
    critical_quantile: float = 0.9999
    min_chunks: int = 5
    min_values: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.warning <= self.critical:
            raise ValueError(f"PSI thresholds must satisfy 0 < warning <= critical, got {self.warning} and "
                             f"{self.critical}")  # fmt: skip
        if not 0 < self.psi_floor < 0.1:
            raise ValueError(f"the PSI floor is a bin share in (0, 0.1), got {self.psi_floor}")
        if min(self.chunk_days, self.min_values, self.min_chunks) < 2 or self.chunk_step < 1:
            raise ValueError("chunk_days, min_values and min_chunks must be >= 2 and chunk_step >= 1")
        if not 0.5 <= self.warning_quantile <= self.critical_quantile < 1:
            raise ValueError("calibration quantiles must satisfy 0.5 <= warning_quantile <= critical_quantile < 1, "
                             f"got {self.warning_quantile} and {self.critical_quantile}")  # fmt: skip


def decile_edges(reference: np.ndarray) -> np.ndarray:
    """(..., n) values, NaN ignored -> (..., 9) their deciles (NaN where a slice has no value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: insufficient data, decided later
        return np.moveaxis(np.nanquantile(reference, DECILES, axis=-1), 0, -1)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Finite ``values`` (..., n) counted into the bins (-inf, e1], (e1, e2], ..., (e9, inf) of ``edges``
    (..., 9) -> (..., 10) int64."""
    finite = np.isfinite(values)
    values = np.where(finite, values, np.nan)  # -inf would count below every edge but not in the total
    # at_or_below[..., k]: values <= e_k (NaN compares False); one edge at a time keeps memory at (..., n).
    at_or_below = np.stack([(values <= edges[..., k, None]).sum(-1) for k in range(edges.shape[-1])], axis=-1)
    cumulative = np.concatenate([at_or_below, finite.sum(-1, keepdims=True)], axis=-1)  # (..., 10)
    return np.diff(cumulative, axis=-1, prepend=0)


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> np.ndarray:
    """PSI of bin counts ``actual`` against ``expected`` (..., B) -> (...); shares floored at ``floor``.
    NaN where either sample is empty."""
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.maximum(expected / expected.sum(-1, keepdims=True), floor)
        a = np.maximum(actual / actual.sum(-1, keepdims=True), floor)
    return np.sum((a - e) * np.log(a / e), axis=-1)


def reachable_psi(expected: np.ndarray, floor: float = PSI_FLOOR) -> np.ndarray:
    """The largest PSI a window can have against bin counts ``expected`` (..., B) -> (...): the whole
    window in one bin (share 1, the others at the floor), the bin that gives most. About 8.28 on deciles
    with the 1e-4 floor; a threshold at or above it can never be crossed."""
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.maximum(expected / expected.sum(-1, keepdims=True), floor)
    at_floor = (floor - e) * np.log(floor / e)  # (..., B) each bin's term when the window leaves it empty
    alone = (1 - e) * np.log(1 / e)  # (..., B) the term of the bin that holds the whole window
    return np.max(at_floor.sum(-1, keepdims=True) - at_floor + alone, axis=-1)


def population_stability_index(reference: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> np.ndarray:
    """PSI of ``actual`` (..., m) against ``reference`` (..., n) on the reference's deciles -> (...)."""
    edges = decile_edges(reference)
    return psi(bin_counts(reference, edges), bin_counts(actual, edges), floor)


@dataclass(frozen=True)
class Assessment:
    """One value per series (the leading axes of ``assess``'s inputs)."""

    psi: np.ndarray  # (...) float, NaN where insufficient data
    ks: np.ndarray  # (...) float, NaN where insufficient data
    n: np.ndarray  # (...) int: finite values in the window
    n_reference: np.ndarray  # (...) int: finite values in the reference
    warning: np.ndarray  # (...) float: calibrated warning threshold
    critical: np.ndarray  # (...) float: calibrated critical threshold
    chunks: np.ndarray  # (...) int: reference chunks the thresholds were calibrated on
    reachable: np.ndarray  # (...) float: the largest PSI any window can have against this reference
    level: np.ndarray  # (...) int: -1 insufficient data, else the index into LEVELS


def assess(reference: np.ndarray, window: np.ndarray, config: DriftConfig) -> Assessment:
    """Drift of ``window`` (..., T_win, M) against ``reference`` (..., T_ref, M): dates x values per date.

    Calibration. Daily features are autocorrelated: 60-day volatility, momentum or a model's
    forecasts wander for months, so a quarter's distribution differs from the long-run one even
    when nothing has changed, and the i.i.d. rule of thumb (PSI 0.1 / 0.25) alarms on a persistent
    feature most days. Each series is therefore compared with itself: every ``chunk_days`` window
    of the reference (one starting every ``chunk_step`` dates) against the rest of the reference,
    out of sample as the monitored window is. These chunk PSIs are the series' ordinary wandering
    on windows of the monitored length, autocorrelation included.

    Their empirical quantiles are too coarse for a threshold checked daily on many features: ten
    years hold ~40 quarters, fewer independent ones, and a new window exceeds the largest of k
    independent chunk PSIs 1 / (k + 1) of the time (about 2% per feature on the tests' data; with
    twenty features, a false warning most weeks). The chunk PSIs are close to log-normal (a positive
    sum of squared share deviations whose spread grows with its level), so a normal fitted to their
    logs reaches past the largest chunk seen: warning = its ``warning_quantile`` (99.5%), critical =
    its ``critical_quantile`` (99.99%), i.e. a window as far from the training distribution as one
    quarter in 200 (10,000) of the series' ordinary wandering. The configured PSIs stay as floors, so
    a stable feature does not alarm on a trivial move. Chunks with fewer than ``min_values`` values
    (a feature's warm-up) are left out; with fewer than ``min_chunks`` left, the configured
    thresholds apply. A series that wanders very far (a trending or strongly regime-dependent one)
    can get thresholds beyond the largest PSI any window reaches (``reachable``, ~8.3 on deciles):
    it cannot alarm at this window length, and ``series_drift`` says so.
    """
    ref_values = reference.reshape(*reference.shape[:-2], -1)  # (..., T_ref * M)
    win_values = window.reshape(*window.shape[:-2], -1)  # (..., T_win * M)
    edges = decile_edges(ref_values)  # (..., 9)
    per_date = bin_counts(reference, edges[..., None, :])  # (..., T_ref, 10)
    expected = per_date.sum(-2)  # (..., 10)
    actual = bin_counts(win_values, edges)  # (..., 10)
    n_ref, n_win = expected.sum(-1), actual.sum(-1)
    sufficient = (n_ref >= config.min_values) & (n_win >= config.min_values)

    warning, critical, chunks = _calibrated(per_date, expected, config)
    value = np.where(sufficient, psi(expected, actual, config.psi_floor), np.nan)
    level = np.where(sufficient, (value >= warning).astype(int) + (value >= critical), -1)
    return Assessment(value, np.where(sufficient, _ks(ref_values, win_values), np.nan), n_win, n_ref, warning,
                      critical, chunks, reachable_psi(expected, config.psi_floor), level)  # fmt: skip


def _calibrated(per_date: np.ndarray, expected: np.ndarray, config: DriftConfig) -> tuple[np.ndarray, ...]:
    """(warning, critical, chunk count), each (...), from the per-date bin counts (..., T_ref, 10) and
    their sum ``expected`` (..., 10)."""
    days = per_date.shape[-2]
    starts = np.arange(0, days - config.chunk_days + 1, config.chunk_step)  # (C,)
    running = np.cumsum(np.concatenate([np.zeros_like(per_date[..., :1, :]), per_date], axis=-2), axis=-2)
    in_chunk = running[..., starts + config.chunk_days, :] - running[..., starts, :]  # (..., C, 10)
    # Each chunk against the rest of the reference: out of sample, as the monitored window is.
    chunk_psi = psi(expected[..., None, :] - in_chunk, in_chunk, config.psi_floor)  # (..., C)
    chunk_psi = np.where(in_chunk.sum(-1) >= config.min_values, chunk_psi, np.nan)
    used = np.isfinite(chunk_psi).sum(-1)
    # log PSI ~ normal; a chunk PSI of 0 (a constant feature) counts as 1e-6, not -inf.
    logs = np.log(np.maximum(chunk_psi, 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # series without usable chunks: NaN, masked below
        mean, spread = np.nanmean(logs, -1), np.nanstd(logs, -1, ddof=1)
    fitted = used >= config.min_chunks
    warning = np.where(fitted, np.fmax(config.warning, np.exp(mean + norm.ppf(config.warning_quantile) * spread)),
                       config.warning)  # fmt: skip
    critical = np.where(fitted, np.fmax(config.critical, np.exp(mean + norm.ppf(config.critical_quantile) * spread)),
                        config.critical)  # fmt: skip
    return warning, np.fmax(critical, warning), used


def _ks(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(...) two-sample KS statistic of the finite values of (..., n) and (..., m)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore")  # empty slices (insufficient data) give NaN, masked by the caller
        statistic = ks_2samp(reference, window, axis=-1, nan_policy="omit", method="asymp").statistic
    return np.asarray(statistic, dtype=np.float64)


@dataclass(frozen=True)
class SeriesDrift:
    """One series' drift, as drift.json lists it."""

    name: str
    psi: float | None  # None: insufficient data
    ks: float | None
    n: int
    n_reference: int
    thresholds: dict[str, float | int] = field(default_factory=dict)  # warning, critical, calibration_chunks
    level: str = "info"  # one of LEVELS or INSUFFICIENT
    reference: tuple[str, str] | None = None  # the reference window's first and last date
    note: str = ""

    @property
    def code(self) -> int:
        """0 info (and insufficient data), 1 warning, 2 critical: the gauge's value."""
        return LEVELS.index(self.level) if self.level in LEVELS else 0

    def reason(self) -> str:
        """One line saying why the level is not info ('' when it is)."""
        if self.code == 0:
            return ""
        return (f"{self.name}: PSI {self.psi:.3f} >= {self.level} threshold {self.thresholds[self.level]:.3f} "
                f"(KS {self.ks:.3f}, {self.n} values)")  # fmt: skip

    def to_dict(self) -> dict:
        out = asdict(self)
        out["reference"] = list(self.reference) if self.reference else None
        return out


def series_drift(
    name: str,
    reference: np.ndarray,
    window: np.ndarray,
    config: DriftConfig,
    reference_dates: tuple[str, str] | None = None,
) -> SeriesDrift:
    """``assess`` of one series: ``reference`` (T_ref, M), ``window`` (T_win, M)."""
    a = assess(reference.astype(np.float64), window.astype(np.float64), config)
    sufficient = int(a.level) >= 0
    if not sufficient:
        note = f"fewer than {config.min_values} values in the reference or the window"
    elif a.warning >= a.reachable or a.critical >= a.reachable:
        # Its reference's chunks wander about as far as a window can move: a longer window would tell more.
        which = "cannot alarm" if a.warning >= a.reachable else "cannot reach critical"
        note = f"{which}: no window's PSI against this reference exceeds {float(a.reachable):.2f}"
    else:
        note = ""
    return SeriesDrift(
        name=name,
        psi=float(a.psi) if sufficient else None,
        ks=float(a.ks) if sufficient else None,
        n=int(a.n),
        n_reference=int(a.n_reference),
        thresholds={
            "warning": float(a.warning),
            "critical": float(a.critical),
            "calibration_chunks": int(a.chunks),
            "largest_reachable_psi": float(a.reachable) if np.isfinite(a.reachable) else None,
        },
        level=LEVELS[int(a.level)] if sufficient else INSUFFICIENT,
        reference=reference_dates,
        note=note,
    )


def insufficient(name: str, note: str, reference_dates: tuple[str, str] | None = None) -> SeriesDrift:
    """A series with nothing to compare (no value in the window or the reference), saying why."""
    return SeriesDrift(name, None, None, 0, 0, {}, INSUFFICIENT, reference_dates, note)


@dataclass(frozen=True)
class DriftResult:
    """Everything ``rayfolio monitor drift`` found: drift.json is ``to_json()``."""

    window: tuple[str, str]  # ISO dates
    reference: tuple[str, str]  # the features' reference (training) window
    reference_source: str  # where the reference window came from
    created_at: str
    config: DriftConfig
    features: tuple[SeriesDrift, ...]
    predictions: tuple[SeriesDrift, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def series(self) -> tuple[SeriesDrift, ...]:
        return (*self.features, *self.predictions)

    @property
    def level(self) -> str:
        return LEVELS[max((s.code for s in self.series), default=0)]

    @property
    def reasons(self) -> list[str]:
        """Worst first."""
        return [s.reason() for s in sorted(self.series, key=lambda s: -s.code) if s.code > 0]

    def to_json(self) -> dict:
        return {
            "level": self.level,
            "reasons": self.reasons,
            "window": list(self.window),
            "created_at": self.created_at,
            "reference": {"window": list(self.reference), "source": self.reference_source},
            "method": {**asdict(self.config), "bins": len(DECILES) + 1, "bin_edges": "deciles of the reference"},
            "features": [s.to_dict() for s in self.features],
            "predictions": [s.to_dict() for s in self.predictions],
            "notes": list(self.notes),
        }
