"""The day-two cycle, once a day: append the new bars -> refresh the production forecasts -> explain
the latest dates (cluster/explanation_refresh.py) -> drift of the latest window -> live performance
of what was served -> the alert check (and, asked to, the staging retraining). ``rayfolio daily``
runs it locally or as a job on a cluster (the CronJob in cluster/k8s/daily-cronjob.yaml submits it
as a RayJob).

Each step reports one row of the summary; a step with nothing to work on (no production models
yet, no audit log yet) says so and the cycle goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rayfolio.cluster.config import RunConfig
from rayfolio.data.sources import PanelSource

logger = logging.getLogger(__name__)

DRIFT_WINDOW_DAYS = 63  # the latest quarter of trading days: the chunk the drift thresholds are calibrated on


@dataclass(frozen=True)
class DailyStep:
    step: str
    status: str  # ok | skipped | info | warning | critical
    detail: str
    seconds: float


@dataclass(frozen=True)
class DailyResult:
    steps: tuple[DailyStep, ...]
    exit_code: int  # 3 when a monitor is critical (monitor check's convention), else 0
    drift: object | None = None  # the DriftResult (cluster/drift.py), for a report section

    def table(self) -> pd.DataFrame:
        frame = pd.DataFrame([s.__dict__ for s in self.steps])
        frame["seconds"] = frame["seconds"].map(lambda s: f"{s:.1f}")
        return frame


def _timed(step: str, run) -> DailyStep:
    started = time.perf_counter()
    logger.info("daily: %s", step)
    status, detail = run()
    return DailyStep(step, status, detail, time.perf_counter() - started)


def latest_window(store_path: Path, days: int = DRIFT_WINDOW_DAYS) -> tuple[dt.date, dt.date]:
    """The store's last ``days`` trading dates."""
    from rayfolio.data.store import FeatureStore

    dates = np.sort(FeatureStore(store_path).to_pandas(columns=[])["date"].unique())
    chosen = dates[-days:]
    return pd.Timestamp(chosen[0]).date(), pd.Timestamp(chosen[-1]).date()


def run_daily(
    config: RunConfig,
    store: Path,
    source: PanelSource | None,
    *,
    registry: Path,
    out: Path,
    audit: str | None,
    submit: bool = False,
    config_path: Path | None = None,
    explanations: Path | None = None,
) -> DailyResult:
    """The cycle on an existing store; Ray must be connected (``ray_connection``). A retraining is
    submitted to the job server ``RAY_API_SERVER_ADDRESS`` names, else ``RAY_ADDRESS``'s.
    ``explanations``: the explanation store (default: <store's parent>/explanations)."""
    from rayfolio.cluster.commands.monitor_check import check, read_level, submit_retraining
    from rayfolio.training.registry import ModelRegistry

    steps: list[DailyStep] = []
    levels = []
    measured = []

    def append():
        if source is None:
            return "skipped", "no --source: no new bars"
        from rayfolio.data.append import append_to_store

        summary = append_to_store(store, source)
        if not summary.rows:
            return "ok", f"nothing new ({summary.skipped_bars} bars already in the store); version {summary.version}"
        return "ok", (f"{summary.rows} rows {summary.first}..{summary.last}, {summary.symbols} symbols, "
                      f"{summary.patched_labels} labels completed -> version {summary.version}")  # fmt: skip

    has_models = bool(ModelRegistry(registry).production("forecaster")) if registry.is_dir() else False

    def refresh():
        if not has_models:
            return "skipped", f"no production forecasters in {registry}"
        from rayfolio.cluster.forecast_refresh import refresh_forecasts

        summary = refresh_forecasts(store, registry, out / "forecasts.parquet")
        return "ok", (f"{summary.dates} dates {summary.first}..{summary.last} ({summary.rows} rows)" if summary.dates
                      else "up to date")  # fmt: skip

    def explain():
        if not has_models:
            return "skipped", f"no production forecasters in {registry}"
        from rayfolio.cluster.explanation_refresh import refresh_explanations

        return "ok", refresh_explanations(store, registry, config.splits, root=explanations).detail()

    def drift():
        from rayfolio.cluster.drift import drift_config, export_gauges, measure_drift, write_drift
        from rayfolio.data.store import FeatureStore

        window = latest_window(store)
        result = measure_drift(FeatureStore(store), window, drift_config(0.1, 0.25), splits=config.splits,
                               registry=ModelRegistry(registry) if has_models else None, audit_url=audit)  # fmt: skip
        files = write_drift(result, out)
        export_gauges(result)
        measured.append(result)
        levels.append(read_level("drift", files.json))
        flagged = [s.name for s in result.series if s.level in ("warning", "critical")]
        return result.level, f"{window[0]}..{window[1]}: " + (", ".join(flagged) if flagged else "no series flagged")

    def performance():
        if audit is None:
            return "skipped", "no audit log: nothing served yet"
        from rayfolio.data.store import FeatureStore
        from rayfolio.serving import live_performance as live

        report = live.live_performance(audit, FeatureStore(store), live.Window(), live.PerformanceConfig())
        path = report.write(out)
        live.export_gauges(report)
        levels.append(read_level("performance", path))
        return report.level, f"{report.recommendations} recommendations; " + ("; ".join(report.reasons) or "ok")

    for name, run in (("append", append), ("forecasts refresh", refresh), ("explain", explain), ("drift", drift),
                      ("live performance", performance)):  # fmt: skip
        steps.append(_timed(name, run))

    def alert_check():
        code = check(levels)
        if code == 0:
            return "ok", "no critical level"
        if not submit:
            return "critical", "a monitor is critical (--submit starts a staging retraining)"
        job = submit_retraining(store, config_path)
        return "critical", f"retraining submitted: {job} (models to staging only)"

    steps.append(_timed("check", alert_check))
    return DailyResult(tuple(steps), check(levels), measured[0] if measured else None)


@dataclass(frozen=True)
class Rehearsal:
    """The day-two cycle rehearsed in the main job: the run's source with its last days held back,
    built, then appended by ``run_daily``; compared with the run's own (full) store."""

    held_back: int  # trading days
    cut: dt.date
    daily: DailyResult
    rows: int  # rows compared
    max_abs_diff: float  # over every feature and label
    same_missing: bool  # identical NaN pattern
    store: Path


def rehearse_day_two(
    config: RunConfig, source: PanelSource, full_store: Path, registry: Path, out: Path, held_back: int = 60
) -> Rehearsal:
    from rayfolio.data.sources import within
    from rayfolio.data.store import FeatureStore, prepare_feature_store

    full = FeatureStore(full_store)
    dates = np.sort(full.to_pandas(columns=[])["date"].unique())
    cut = pd.Timestamp(dates[-held_back - 1]).date()
    store = out / "store"
    prepare_feature_store(within(source, end=cut), store, full.horizons, feature_set=full.feature_set,
                          label_lag=full.label_lag)  # fmt: skip
    # The appended store equals the full one (checked below), so its latest dates' explanations are the
    # full store's: the rehearsal's explain step finds those the main job stored and adds any missing.
    from rayfolio.explain.store import default_root

    daily = run_daily(config, store, within(source, start=cut + dt.timedelta(days=1)), registry=registry,
                      out=out / "monitor", audit=None, explanations=default_root(full_store))  # fmt: skip
    a, b = FeatureStore(store).to_pandas(), full.to_pandas()
    columns = [*full.feature_names, *full.label_names]
    same_keys = a[["date", "symbol"]].equals(b[["date", "symbol"]])
    x, y = a[columns].to_numpy(float), b[columns].to_numpy(float)
    same_missing = same_keys and x.shape == y.shape and bool((np.isnan(x) == np.isnan(y)).all())
    diff = float(np.nanmax(np.abs(x - y))) if same_missing else float("inf")
    return Rehearsal(held_back, cut, daily, len(a), diff, same_missing, store)


def day_two_section(report, rehearsal: Rehearsal, run_dir: Path) -> None:
    """The report's "Day two" section: the rehearsal's daily table, the append against the full
    build, and the drift of the appended window."""
    from rayfolio.data.drift_report import drift_section
    from rayfolio.data.markdown import table

    r = rehearsal
    verdict = (f"equals the full build: {r.rows:,} rows, identical missing values, largest difference "
               f"{r.max_abs_diff:.1e} over every feature and label" if r.same_missing
               else "DIFFERS from the full build (rows or missing values)")  # fmt: skip
    text = [
        f"The feature store was built from the same source up to {r.cut}, and `rayfolio daily` then appended "
        f"the last {r.held_back} trading days (Ray Data over the new bars only, each symbol continued from its "
        f"stored state), logged the production models' forecasts for the dates they had not forecast, measured "
        f"drift over the latest {DRIFT_WINDOW_DAYS} trading days against the production forecasters' training "
        f"window, and checked the levels (no audit log here: live performance needs served recommendations).",
        "",
        f"The appended store {verdict}.",
        "",
        table(r.daily.table(), index=False),
    ]
    if r.daily.drift is not None:
        text += ["", "### Drift of the latest window", "", drift_section(r.daily.drift, run_dir / "plots", run_dir)]
    report.add("Day two", "\n".join(text))
