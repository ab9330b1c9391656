"""``rayfolio forecasts refresh``: the production models' forecasts for the store's dates the forecast
log does not hold yet, computed as Ray tasks (chunks of dates; each task loads the store's panel and
the production ensemble, the same ``production_ensemble`` the backtest replays and the service
serves), then appended to the log (training/forecast_log.py).

The first refresh for a set of versions starts at the last refit's test start (the first date those
models never saw); later ones at the day after the last date logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from rayfolio.data.store import FeatureStore
from rayfolio.training.forecast_log import ForecastLog, forecast_rows, models_key
from rayfolio.training.registry import ModelRegistry, RegistryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshSummary:
    log: str
    models: str
    dates: int
    first: str | None
    last: str | None
    rows: int
    tasks: int
    seconds: float

    def lines(self) -> list[str]:
        if not self.dates:
            return [f"forecasts: {self.log}: up to date (models {self.models})"]
        return [
            f"forecasts: {self.log}",
            f"  models:   {self.models}",
            f"  added:    {self.dates} dates, {self.first} .. {self.last} ({self.rows:,} rows, {self.tasks} Ray tasks)",
            f"  took {self.seconds:.1f} s",
        ]


def _production(registry: ModelRegistry) -> dict[str, str]:
    production = registry.production("forecaster")
    if not production:
        raise RegistryError(f"{registry.root}: no production forecasters to refresh forecasts with (run rayfolio run)")
    return {v.name: v.version for v in production}


def _first_date(registry: ModelRegistry) -> pd.Timestamp:
    """The production models' first unseen date: their (last refit's) test start."""
    card = registry.production("forecaster")[-1].card
    return pd.Timestamp(card.calendar.splits.test_start)


def _forecast_dates(store: str, registry: str, ts: list[int], versions: dict[str, str]) -> pd.DataFrame:
    """Forecast rows for the panel's date indices ``ts`` (in a Ray task)."""
    from rayfolio.cluster.served import production_ensemble
    from rayfolio.training.panel import Panel

    panel = Panel.from_store(FeatureStore(store))
    forecasts = production_ensemble(ModelRegistry(Path(registry)), panel).forecast_many(ts)
    return forecast_rows(forecasts, panel.symbols, versions)


def refresh_forecasts(
    store_path: Path, registry_path: Path, log_path: Path, *, since: pd.Timestamp | None = None, chunk: int = 250
) -> RefreshSummary:
    """Append the forecasts of every store date after the log's last (for these versions) to the log."""
    started = time.perf_counter()
    registry = ModelRegistry(registry_path)
    versions = _production(registry)
    key = models_key(versions)
    log = ForecastLog(log_path)
    last = log.last_date(key)
    start = since if since is not None else (last + pd.Timedelta(days=1) if last is not None else _first_date(registry))
    if last is not None and start <= last:
        start = last + pd.Timedelta(days=1)  # never twice the same date by the same models
    store = FeatureStore(store_path)
    every = pd.DatetimeIndex(np.sort(store.to_pandas(columns=[])["date"].unique()))  # the panel's dates
    dates = every[every >= start]
    if dates.empty:
        return RefreshSummary(str(log.path), key, 0, None, None, 0, 0, time.perf_counter() - started)
    ts = every.get_indexer(dates).tolist()
    chunks = [ts[i : i + chunk] for i in range(0, len(ts), chunk)]
    task = ray.remote(num_cpus=0.5)(_forecast_dates)
    logger.info("forecasts: %d new dates (%s .. %s) in %d Ray tasks", len(ts), dates[0].date(), dates[-1].date(),
                len(chunks))  # fmt: skip
    refs = [task.remote(str(store.path), str(registry.root), c, versions) for c in chunks]
    rows = pd.concat(ray.get(refs), ignore_index=True)
    added = log.append(rows)
    return RefreshSummary(str(log.path), key, len(ts), str(dates[0].date()), str(dates[-1].date()), added,
                          len(chunks), time.perf_counter() - started)  # fmt: skip
