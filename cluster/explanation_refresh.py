"""``rayfolio explanations refresh``: the production forecasters' explanations of the store's latest
dates, computed as Ray tasks (chunks of dates; each task loads the store's panel and the production
ensemble as the service's Explainer does, and explains every horizon of its dates) and written to the
explanation store (explain/store.py) that the service reads. Dates already stored for these versions
and settings are skipped.

Which dates: the latest ``DEFAULT_DAYS`` trading days of the store by default (fewer above 100 assets:
``latest_days``), or every date from
``since`` on. Not every date of the forecast log: one date costs ~2.5 s of one core on the quickstart
models (3 forecasters, 20 assets, 128 samples; explain/expected_gradients.py), so its ~1,500 dates
would take ~30 min on 2 cores. A date the service is asked for and the store lacks is computed on
that request and stored, so older dates fill in as they are asked for.

The method settings (samples, background size) are the service's (``ServeSettings``): the store is
keyed by them, so a service configured otherwise computes its own rather than reading these.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The main job's share: 20 dates took 45 s on this (busy) 2-core machine, 2 tasks each starting
# (~5 s of imports), loading the ensemble (~3 s) and explaining 10 dates (~2.1 s each): 15 keep it < 40 s.
DEFAULT_DAYS = 15
# A budget that shrinks with the universe: a date's explanation costs ~N (3.3x from 100 to 400 assets,
# bench/explain_micro.py), so by default (the main job, the daily cycle) at most this many date x asset
# explanations: the latest 15 dates up to 100 assets, 3 at 400. The service explains other dates on request.
PRECOMPUTE_ASSET_DATES = 1_500

# Dates per Ray task. A task pays ~8 s of imports and loading once; a date costs ~N (~2 s at 20 assets,
# ~30 s at 400), so the least worth a task is counted in date x asset: 4 dates at 20 assets, 1 from 80 up.
# At 400 assets the 3 dates of the budget were one 103 s task; on 2 CPUs they are now two.
MIN_CHUNK_ASSET_DATES, MAX_CHUNK = 80, 25
# What one task holds, declared to Ray so that tasks at once fit the machine (one per CPU otherwise): a
# worker's imports and models, the panel and each forecaster's standardised copy and graph, and one
# date's explanation at a time (explain/expected_gradients.py: its path points, three (S, W, N, F)
# float32 arrays, and one pass of ROWS_PER_PASS rows; bench/explain_micro.py: 0.4 GB above the process
# for a quickstart GAT at 400 assets). 1.6 GB at 20 assets x 8,000 days, 2.4 GB at 400 x 2,520 (windows 40):
# two at once on 2 CPUs fit a 23 GB machine; before, a GAT date alone needed ~40 GB at 400 assets.
WORKER_BYTES = 1 << 30
PASS_BYTES = 512 << 20


@dataclass(frozen=True)
class ExplainSummary:
    root: str
    models: str
    asked: int  # dates asked for
    explained: int  # dates computed and stored now (the rest were stored already)
    first: str | None
    last: str | None
    tasks: int
    seconds: float

    def detail(self) -> str:
        if not self.asked:
            return "no store dates asked for"
        span = f"{self.first}..{self.last}"
        if not self.explained:
            return f"{self.asked} dates {span}: up to date"
        return (f"{self.explained} of {self.asked} dates {span} explained ({self.asked - self.explained} stored "
                f"already) in {self.tasks} Ray tasks, {self.seconds:.1f} s")  # fmt: skip

    def line(self) -> str:
        return f"explanations: {self.detail()} -> {self.root} (models {self.models})"


def latest_days(n_assets: int) -> int:
    """How many of the latest dates are explained by default at ``n_assets`` assets (at least one)."""
    return max(1, min(DEFAULT_DAYS, PRECOMPUTE_ASSET_DATES // max(n_assets, 1)))


def chunk_dates(dates: list[int], cpus: int, n_assets: int) -> list[list[int]]:
    """The dates split into Ray tasks: one per CPU where each is worth its loading (see MIN_CHUNK_ASSET_DATES)."""
    least = max(1, math.ceil(MIN_CHUNK_ASSET_DATES / max(n_assets, 1)))
    size = max(least, min(MAX_CHUNK, math.ceil(len(dates) / max(cpus, 1))))
    return [dates[i : i + size] for i in range(0, len(dates), size)]


def task_memory(days: int, assets: int, features: int, forecasters: int, samples: int, window: int) -> int:
    """Bytes one explanation task may hold (see WORKER_BYTES): linear in the universe."""
    panel = 4 * days * assets * features * (2 + forecasters)  # features, labels and more; a copy per forecaster
    graphs = 8 * days * assets * 8 * forecasters  # (T, N, k) int64 neighbour tables, k <= 8
    points = 3 * 4 * samples * window * assets * features
    return WORKER_BYTES + panel + graphs + points + PASS_BYTES


def _explain_dates(store: str, registry: str, versions: dict[str, str], ts: list[int], splits: dict, samples: int,
                   background: int) -> tuple[str, dict]:  # fmt: skip
    """(the method's key, {ISO date: explanation rows}) for the panel's date indices ``ts`` (in a Ray task)."""
    from rayfolio.data.splits import SplitConfig
    from rayfolio.data.store import FeatureStore
    from rayfolio.explain.expected_gradients import explain_date, iso, method_for, training_background
    from rayfolio.explain.store import explanation_rows
    from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry

    panel = Panel.from_store(FeatureStore(store))
    ensemble = ForecastEnsemble(load_forecasters(ModelRegistry(Path(registry)), panel, versions=versions), panel)
    dates = training_background(panel, SplitConfig.model_validate(splits), ensemble.min_history, background)
    method = method_for(panel, dates, samples)
    rows = {}
    for t in ts:
        date = iso(panel.dates[t])
        rows[date] = explanation_rows(date, explain_date(ensemble, t, dates, panel.feature_names, method))
    return method.key(), rows


def refresh_explanations(
    store_path: Path,
    registry_path: Path,
    splits,
    *,
    root: Path | None = None,
    since=None,
    days: int | None = None,
    samples: int | None = None,
    background: int | None = None,
) -> ExplainSummary:
    """Explain the store's dates from ``since`` on (a date), else its latest ``days`` (None:
    ``latest_days`` of its universe), that the
    explanation store under ``root`` (default: <store's parent>/explanations) lacks for the production
    forecasters. ``samples``/``background``: the service's defaults unless given. Ray must be connected."""
    import numpy as np
    import pandas as pd
    import ray

    from rayfolio.data.store import FeatureStore
    from rayfolio.explain.expected_gradients import iso, method_for, per_row, training_background
    from rayfolio.explain.store import ExplanationStore, default_root
    from rayfolio.serving.settings import ServeSettings
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry, RegistryError

    started = time.perf_counter()
    fields = ServeSettings.model_fields
    samples = samples or fields["explain_samples"].default
    background = background or fields["explain_background"].default
    registry = ModelRegistry(registry_path)
    production = registry.production("forecaster")
    if not production:
        raise RegistryError(f"{registry.root}: no production forecasters to explain (run rayfolio run)")
    versions = {v.name: v.version for v in production}
    store = FeatureStore(store_path)
    panel = Panel.from_store(store)
    # The same background and key the tasks (and the service) compute: the store directory to look in.
    history = max(v.card.window for v in production)
    method = method_for(panel, training_background(panel, splits, history, background), samples)
    explanations = ExplanationStore(root or default_root(store.path), versions, method.key())
    every = pd.DatetimeIndex(panel.dates)
    days = days or latest_days(len(panel.symbols))
    ts = np.flatnonzero(every >= pd.Timestamp(since)) if since is not None else np.arange(len(every))[-days:]
    ts = ts[ts >= history - 1]  # a date needs a full window behind it
    asked = [iso(panel.dates[t]) for t in ts]
    stored = explanations.dates()
    missing = [int(t) for t, date in zip(ts, asked, strict=True) if date not in stored]
    first, last = (asked[0], asked[-1]) if asked else (None, None)
    if not missing:
        return ExplainSummary(str(explanations.path), explanations.models, len(asked), 0, first, last, 0,
                              time.perf_counter() - started)  # fmt: skip
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    chunks = chunk_dates(missing, cpus, len(panel.symbols))
    drawn = per_row(samples, background) * background
    memory = task_memory(len(panel.dates), len(panel.symbols), len(panel.feature_names), len(versions), drawn,
                         history)  # fmt: skip
    # Never more than the cluster has: a task Ray could never place would wait forever.
    memory = min(memory, int(resources.get("memory", memory)))
    logger.info("explanations: %d dates (%s .. %s) in %d Ray tasks, %.1f GB each", len(missing),
                iso(panel.dates[missing[0]]), iso(panel.dates[missing[-1]]), len(chunks), memory / 2**30)  # fmt: skip
    task = ray.remote(num_cpus=1, memory=memory)(_explain_dates)
    plain = splits.model_dump(mode="json")
    args = (str(store.path), str(registry.root), versions)
    pending = [task.remote(*args, chunk, plain, samples, background) for chunk in chunks]
    while pending:  # each chunk stored as it comes: an interrupted refresh keeps what it finished
        (done,), pending = ray.wait(pending, num_returns=1)
        key, rows = ray.get(done)
        if key != method.key():
            raise RuntimeError(f"a task explained with {key}, the store is keyed {method.key()}")
        for date, frame in rows.items():
            explanations.put(date, frame)
    return ExplainSummary(str(explanations.path), explanations.models, len(asked), len(missing), first, last,
                          len(chunks), time.perf_counter() - started)  # fmt: skip
