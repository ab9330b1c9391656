"""``rayfolio run``: every stage built so far, end to end, then the report.

Stages today: data (feature store on Ray Data, purged splits), forecasters
(LSTM, Transformer, GAT searched on Ray Tune over Ray Train, against
baselines), allocation (PPO and SAC agents searched on Ray Tune, the forecast
tilt around 1/N chosen on validation, then the walk-forward backtest in which
the service's own recommendation pipeline, replayed per risk profile, trades
next to the agents and the baseline portfolios), day two (the source's last
60 days held back, then appended by the daily cycle: append, forecasts refresh,
drift, check; the appended store compared with the full one). The report opens with what
a client following the recommendations would have earned. Later stages join
this list in order. Each stage's report section lives with the stage
(data/overview.py, training/report.py, rl/report.py); this module runs them
in order and writes what they return.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import yaml

from rayfolio.cluster.config import RunConfig, check_env_features, check_index_file
from rayfolio.cluster.daily import day_two_section, rehearse_day_two
from rayfolio.cluster.runtime import ray_connection
from rayfolio.cluster.scale import allocation_rows, cluster_shape, forecaster_rows
from rayfolio.cluster.served import oversight_section, served_factory, walk_forward_ensemble
from rayfolio.data.features import available_features
from rayfolio.data.markdown import Report, table
from rayfolio.data.overview import data_overview, data_section
from rayfolio.data.relative import RELATIVE_NAMES
from rayfolio.data.sources import make_source
from rayfolio.data.splits import PurgedDateSplitter, walk_forward
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.validate import validate_before_ray
from rayfolio.rl.report import COMPARISON, allocation_section, served_section, tilt_section
from rayfolio.rl.stage import run_allocation, signal_horizon
from rayfolio.training.ensemble import reliability_table, split_indices
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry
from rayfolio.training.report import confidence_section, forecast_section, rank_ic_on_test
from rayfolio.training.stage import LastRefitStage, run_forecasters

logger = logging.getLogger(__name__)

DAY_TWO_HELD_BACK = 60  # trading days the day-two rehearsal holds back and appends

STAGES = ("data", "forecasters", "allocation", "day two")


def _stage(number: int, name: str, what: str) -> float:
    logger.info("\n[%d/%d] %s: %s", number, len(STAGES), name, what)
    return time.perf_counter()


def run_main_job(
    config: RunConfig,
    *,
    address: str | None = None,
    store_dir: Path | None = None,
    existing_store: Path | None = None,
    stage: LastRefitStage = "auto",
) -> Path:
    """Run every stage on ``config``; returns the path of the written report. ``existing_store``: train on
    that published store (checksums verified) instead of building one; ``stage``: where the last refit's
    forecasters are registered ("staging": a retraining for review, never production)."""
    run_dir = config.run_dir.resolve()
    # Mistakes a user can make are refused here, in seconds, before Ray starts.
    if existing_store is None:
        store_dir = config.store_dir(store_dir)
        source = make_source(config.data.source, config.data.synthetic.to_config())
        validate_before_ray(source)
        features = available_features(source.value_columns, config.data.features)
        relative = RELATIVE_NAMES if config.data.features == "alpha158" else ()
        check_env_features(config, [*(f.name for f in features), *relative], f"'{source.name}'")
    else:
        store = FeatureStore(existing_store.resolve())
        store.verify()
        store_dir = store.path
        check_env_features(config, [*store.feature_names, *store.cross_sectional_feature_names], str(store_dir))
    check_index_file(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with ray_connection(config.ray, address):
        if existing_store is None:
            t0 = _stage(1, "data", f"feature store from '{config.data.source}' on Ray Data")
            summary = prepare_feature_store(source, store_dir, config.data.horizons, feature_set=config.data.features,
                                            label_lag=config.data.label_lag)  # fmt: skip
            store = FeatureStore(store_dir)
        else:
            t0 = _stage(1, "data", f"the existing feature store {store_dir} (not rebuilt)")
            summary = store.summary()
        # A label at t reaches t + lag + h: that many trading days are purged before each boundary.
        splitter = PurgedDateSplitter(config.splits, purge=max(store.horizons) + store.label_lag)
        overview = data_overview(store, splitter, run_dir / "plots")
        timings["data"] = time.perf_counter() - t0
        logger.info("\n".join(summary.lines()))
        logger.info(table(overview.splits, floatfmt=".0f"))

        panel = Panel.from_store(store)
        scale = {"assets": f"{len(panel.symbols):,}", "Ray cluster": cluster_shape()}
        n_refits = len(walk_forward(splitter.config, config.walk_forward.refit_every, splitter.purge, panel.dates))
        scale.update(forecaster_rows(config, panel, splitter, n_refits))

        t0 = _stage(2, "forecasters", f"{', '.join(config.forecasters.families)} on Ray Tune + Ray Train, baselines")
        registry = ModelRegistry(config.registry_root())
        forecasts = run_forecasters(store, splitter, config.forecasters, run_dir, registry, config.walk_forward, stage)
        timings["forecasters"] = time.perf_counter() - t0
        logger.info(table(rank_ic_on_test(forecasts), floatfmt=".4f"))
        if registry.production("forecaster"):  # the service's explanations of the latest dates, precomputed
            from rayfolio.cluster.explanation_refresh import PRECOMPUTE_ASSET_DATES, latest_days, refresh_explanations

            logger.info(refresh_explanations(store.path, registry.root, config.splits).line())
            scale["explanations precomputed"] = (
                f"the latest {latest_days(len(panel.symbols))} dates (at most {PRECOMPUTE_ASSET_DATES:,} date x "
                "asset; the daily cycle the same; the service explains any other date on request)"
            )

        algorithms = ", ".join(a.upper() for a in config.allocation.agents.algorithms)
        t0 = _stage(3, "allocation", f"{algorithms} agents on Ray Tune, the tilt, the served path, backtest")
        ensemble, served, ensemble_scores = None, None, None
        if forecasts.registered:
            # Each refit's ensemble of the versions just registered, calibrated on its validation window:
            # at every date, the service's forecast with the models it had then.
            ensemble = walk_forward_ensemble(registry, panel, [(r.splits, r.versions) for r in forecasts.refits],
                                             splitter.purge)  # fmt: skip
            served = served_factory(config, registry, panel, ensemble, run_dir)
            stitched = next(iter(forecasts.scored.values()))["test"][0]  # the out-of-sample dates
            ensemble_scores = (stitched, ensemble.z_panel(stitched)[stitched])
        allocation = run_allocation(
            store,
            splitter,
            config.allocation,
            run_dir,
            registry,
            source=config.data.source,
            ensemble=ensemble,
            served=served,
            stage=stage,
        )
        timings["allocation"] = time.perf_counter() - t0
        n_features = len(config.allocation.env.features) + (
            len(panel.horizons) if config.allocation.env.forecast_features else 0
        )
        scale.update(allocation_rows(config, len(panel.symbols), n_features, allocation.searches))
        logger.info(table(allocation.backtest.metrics[COMPARISON], floatfmt=".3f"))

        rehearsal = None
        if existing_store is None:
            t0 = _stage(4, "day two", f"the last {DAY_TWO_HELD_BACK} days held back, then rayfolio daily")
            rehearsal = rehearse_day_two(config, source, store_dir, registry.root, run_dir / "day-two",
                                         DAY_TWO_HELD_BACK)  # fmt: skip
            timings["day two"] = time.perf_counter() - t0
            logger.info(table(rehearsal.daily.table(), index=False))
    timings["total"] = time.perf_counter() - started
    logger.info("\ntimings: %s", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

    (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    (run_dir / "summary.json").write_text(
        json.dumps({"data": asdict(summary), "timings_s": {k: round(v, 2) for k, v in timings.items()}}, indent=2)
    )
    report = Report(f"rayfolio run '{config.name}'")
    served_section(report, allocation.backtest, allocation.served, config.allocation)
    report.add(
        "Run",
        table(
            _frame(
                {
                    "source": config.data.source,
                    "feature store": str(store_dir),
                    "label horizons (trading days)": ", ".join(map(str, config.data.horizons)),
                    "purge between splits (trading days)": splitter.purge,
                    "walk-forward refits": ", ".join(str(r.splits.test_start) for r in forecasts.refits)
                    + (f" (every {config.walk_forward.refit_every} months)" if config.walk_forward.refit_every else ""),
                    **{f"time: {k} (s)": f"{v:.1f}" for k, v in timings.items()},
                    **scale,
                }
            )
        ),
    )
    data_section(report, summary, overview, run_dir)
    forecast_section(report, forecasts, config.forecasters.cost_bps, panel, ensemble_scores)
    if ensemble is not None:
        test = split_indices(panel, splitter, "test")
        horizon = signal_horizon(panel.horizons, config.allocation.env.rebalance_every)
        confidence_section(report, reliability_table(ensemble, test, horizon), horizon)
    tilt_section(report, allocation)
    allocation_section(report, allocation, config.allocation, run_dir)
    if allocation.served is not None:
        oversight_section(report, run_dir / "served_audit.db")
    if rehearsal is not None:
        day_two_section(report, rehearsal, run_dir)
    return report.write(run_dir / "report.md")


def _frame(values: dict) -> pd.DataFrame:
    return pd.DataFrame({"value": [str(v) for v in values.values()]}, index=list(values))
