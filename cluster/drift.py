"""What ``rayfolio monitor drift`` measures, assembled: the store's features against the production
forecasters' training window, the production ensemble's forecasts against its validation window, the
served target weights against those served before, into one ``DriftResult``; drift.json, the report
section and its plot, and the gauges.

Every series is put on the store's trading calendar as a (T, M) array (dates x values that day,
NaN where none) and handed to ``rayfolio.data.drift``, which knows nothing of stores or models.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rayfolio.cluster.config import ConfigError
from rayfolio.data.drift import DriftConfig, DriftResult, SeriesDrift, insufficient, series_drift
from rayfolio.data.sources import DateWindow
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore

if TYPE_CHECKING:
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry

NO_SERVED = "no served recommendations in the window"


class DriftInputError(ConfigError):
    """A window, threshold or audit log the drift check cannot use; one line naming it."""


def parse_window(text: str) -> tuple[dt.date, dt.date]:
    """``START:END`` (ISO dates, inclusive, START <= END, both given)."""
    window = DateWindow.parse(text, DriftInputError, open_ends=False)
    return window.start, window.end


def check_window(window: tuple[dt.date, dt.date], store: FeatureStore) -> None:
    """Refuse a window reaching outside the store's dates (from its manifest: nothing read)."""
    first, last = (dt.date.fromisoformat(str(d)[:10]) for d in store.manifest["date_range"])
    if window[0] < first or window[1] > last:
        raise DriftInputError(f"--window {window[0]}:{window[1]} reaches outside the store {store.path}, "
                              f"which holds {first} .. {last}")  # fmt: skip


def drift_config(warning: float, critical: float) -> DriftConfig:
    try:
        return DriftConfig(warning=warning, critical=critical)
    except ValueError as err:
        raise DriftInputError(f"--psi-warning {warning} / --psi-critical {critical}: {err}") from None


@dataclass(frozen=True)
class _Calendar:
    """The store's trading dates and the rows of the window and of the features' reference."""

    dates: np.ndarray  # (T,) datetime64[D]
    window: np.ndarray  # (T,) bool
    reference: np.ndarray  # (T,) bool
    source: str  # where the reference window came from

    def span(self, mask: np.ndarray) -> tuple[str, str]:
        chosen = self.dates[mask]
        return (str(chosen[0]), str(chosen[-1])) if len(chosen) else ("", "")


def measure_drift(
    store: FeatureStore,
    window: tuple[dt.date, dt.date],
    config: DriftConfig,
    *,
    splits: SplitConfig,
    registry: ModelRegistry | None = None,
    audit_url: str | None = None,
) -> DriftResult:
    """Drift of ``window`` against the reference: the production forecasters' training window when
    ``registry`` is given (their cards' calendar), else ``splits``' train window (purged like a run's).
    The forecasts are measured only with a registry, the served weights only with an audit log."""
    check_window(window, store)
    audit_url = _audit_url(audit_url) if audit_url else None  # refused before anything is read
    frame = store.to_pandas()
    dates = np.sort(frame["date"].unique()).astype("datetime64[D]")  # (T,)
    in_window = (dates >= np.datetime64(window[0])) & (dates <= np.datetime64(window[1]))
    if not in_window.any():
        raise DriftInputError(f"--window {window[0]}:{window[1]} holds no trading date of the store {store.path}")
    production = _production(registry) if registry is not None else None
    if production is not None:
        versions, calendar = production
        splitter = PurgedDateSplitter(calendar.splits, purge=calendar.purge)
        source = f"training window of the production forecasters ({_names(versions)}) in {registry.root}"
    else:
        splitter = PurgedDateSplitter(splits, purge=max(store.horizons) + store.label_lag)
        source = "train split of the run config"
    parts = splitter.split_dates(dates)
    cal = _Calendar(dates, in_window, np.isin(dates, parts["train"]), source)

    features = tuple(_feature_drift(frame, cal, store.feature_names, config))
    predictions: list[SeriesDrift] = []
    notes = _notes(cal, config)
    if production is not None:
        validation = np.isin(dates, parts["validation"])
        predictions += _forecast_drift(frame, store, registry, production[0], cal, validation, config)
    else:
        notes.append("no --registry given: the reference is the config's train split and forecasts are not measured")
    predictions.append(_weights_drift(audit_url, cal, config))
    if audit_url is None:
        notes.append("no --audit given: served target weights are not measured")
    return DriftResult(
        window=(window[0].isoformat(), window[1].isoformat()),
        reference=cal.span(cal.reference),
        reference_source=source,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=config,
        features=features,
        predictions=tuple(predictions),
        notes=tuple(notes),
    )


def _production(registry: ModelRegistry):
    """({name: version}, calendar) of the production forecasters; the first one's calendar (one refit
    registers them together, on one calendar)."""
    from rayfolio.training.registry import RegistryError

    chosen = registry.production("forecaster")
    if not chosen:
        raise RegistryError(f"no production forecaster in {registry.root}: run `rayfolio run` first")
    return {v.name: v.version for v in chosen}, chosen[0].card.calendar


def _names(versions: dict[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def _dense(frame: pd.DataFrame, dates: np.ndarray, columns: tuple[str, ...]):
    """Yield (name, (T, N) float64) per column: the store's long rows on the (date, symbol) grid."""
    t = np.searchsorted(dates, frame["date"].to_numpy().astype("datetime64[D]"))
    symbols, n = np.unique(frame["symbol"].to_numpy().astype(str), return_inverse=True)
    for name in columns:
        grid = np.full((len(dates), len(symbols)), np.nan)
        grid[t, n] = frame[name].to_numpy(dtype=np.float64)
        yield name, grid


def _feature_drift(frame: pd.DataFrame, cal: _Calendar, names: tuple[str, ...], config: DriftConfig):
    span = cal.span(cal.reference)
    for name, grid in _dense(frame, cal.dates, names):
        yield series_drift(name, grid[cal.reference], grid[cal.window], config, span)


def _forecast_drift(
    frame: pd.DataFrame,
    store: FeatureStore,
    registry: ModelRegistry,
    versions: dict[str, str],
    cal: _Calendar,
    validation: np.ndarray,
    config: DriftConfig,
) -> list[SeriesDrift]:
    """``forecast_<h>d``: the production ensemble's expected h-day log returns over the window against
    its forecasts over its own validation window (out of sample for its members)."""
    from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
    from rayfolio.training.panel import Panel

    panel = Panel.from_frame(frame, store.feature_names, store.horizons,
                             relative=bool(store.cross_sectional_feature_names))  # fmt: skip
    # No confidence calibration: the expected returns do not depend on it.
    ensemble = ForecastEnsemble(load_forecasters(registry, panel, versions=versions), panel)
    forecast = _forecasts(ensemble, panel, validation | cal.window)  # (T, N, H), NaN on other dates
    span = cal.span(validation)
    return [series_drift(f"forecast_{h}d", forecast[validation, :, k], forecast[cal.window, :, k], config, span)
            for k, h in enumerate(panel.horizons)]  # fmt: skip


def _forecasts(ensemble, panel: Panel, wanted: np.ndarray) -> np.ndarray:
    """(T, N, H) expected returns on the ``wanted`` (T,) dates that have the ensemble's history."""
    out = np.full((len(panel.dates), len(panel.symbols), len(panel.horizons)), np.nan)
    ts = np.flatnonzero(wanted)
    ts = ts[ts >= ensemble.min_history - 1]
    for t, forecast in zip(ts, ensemble.forecast_many(ts.tolist()), strict=True):
        out[t] = forecast.expected_return
    return out


def _weights_drift(audit_url: str | None, cal: _Calendar, config: DriftConfig) -> SeriesDrift:
    """``target_weights``: every weight (CASH included) of the recommendations served in the window
    against those served before it, each on the trading date of its ``as_of``."""
    served = _served_weights(audit_url) if audit_url else []
    t = np.searchsorted(cal.dates, np.array([as_of for as_of, _ in served], dtype="datetime64[D]"), side="right") - 1
    rows: dict[int, list[float]] = {}
    for i, (_, weights) in zip(t.tolist(), served, strict=True):
        if i >= 0:  # served before the store's first date: no trading date to put it on
            rows.setdefault(i, []).extend(weights)
    grid = np.full((len(cal.dates), max((len(v) for v in rows.values()), default=1)), np.nan)  # (T, M)
    for i, values in rows.items():
        grid[i, : len(values)] = values
    has = np.isfinite(grid).any(axis=1)  # (T,) dates with a served weight
    before = np.arange(len(cal.dates)) < np.flatnonzero(cal.window)[0]
    if not has[cal.window].any():
        return SeriesDrift("target_weights", None, None, 0, 0, {}, "info", None, NO_SERVED)
    if not has[before].any():
        return insufficient("target_weights", "no served recommendations before the window")
    return series_drift("target_weights", grid[before], grid[cal.window], config, cal.span(before & has))


def _audit_url(text: str) -> str:
    """A SQLAlchemy URL, or a SQLite file's path made one; a SQLite file that does not exist is refused
    (opening it would create an empty log)."""
    from rayfolio.serving.audit import sqlite_url

    url = text if "://" in text else sqlite_url(text)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise DriftInputError(f"--audit {text}: no audit log there")
    return url


def _served_weights(url: str) -> list[tuple[str, list[float]]]:
    """(as_of, target weights) of every recommendation in the audit log at ``url``, in order."""
    from rayfolio.serving.audit import AuditLog

    log, out, page = AuditLog(url), [], 1000
    for offset in range(0, log.count(), page):
        for record in log.records(limit=page, offset=offset):
            if record.kind == "recommendation":
                response = record.payload["response"]
                out.append((response["as_of"], [float(w) for w in response["target_weights"].values()]))
    return out


def _notes(cal: _Calendar, config: DriftConfig) -> list[str]:
    notes = []
    days = int(cal.window.sum())
    if days < config.chunk_days // 2:
        notes.append(f"the window holds {days} trading days, the thresholds are calibrated on {config.chunk_days}-day "
                     "chunks: expect more false alarms on so short a window")  # fmt: skip
    if (cal.window & cal.reference).any():
        notes.append("the window overlaps the reference window: drift there is understated")
    return notes


@dataclass(frozen=True)
class DriftFiles:
    json: Path
    markdown: Path
    plot: Path


def write_drift(result: DriftResult, out: Path) -> DriftFiles:
    """``<out>/drift.json``, ``<out>/drift.md`` and its plot under ``<out>/plots``, each written whole
    (to a partial file, then renamed)."""
    from rayfolio.data.drift_report import PLOT, drift_section
    from rayfolio.data.markdown import Report

    out.mkdir(parents=True, exist_ok=True)
    path = out / "drift.json"
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    os.replace(partial, path)
    report = Report("Drift")
    report.add(f"Window {result.window[0]} .. {result.window[1]}", drift_section(result, out / "plots"))
    return DriftFiles(path, report.write(out / "drift.md"), out / "plots" / PLOT)


def export_gauges(result: DriftResult) -> bool:
    """Hold ``rayfolio_drift_psi{feature}`` and ``rayfolio_drift_level{feature}`` (0 info, 1 warning,
    2 critical) for every series in the monitor gauges' holder actor (serving/held_gauges.py: exported
    until the next run replaces them, long after this command ends), when Ray is initialised; False
    when it is not. A series without a PSI (insufficient data) holds NaN, not an earlier run's value."""
    from rayfolio.serving.held_gauges import hold_gauge

    psi = {s.name: np.nan if s.psi is None else s.psi for s in result.series}
    levels = {s.name: s.code for s in result.series}
    return hold_gauge("rayfolio_drift_psi", "PSI of a feature or prediction series against its reference",
                      "feature", psi) and hold_gauge("rayfolio_drift_level", "drift level: 0 info, 1 warning, "
                      "2 critical", "feature", levels)  # fmt: skip
