"""The forecaster stage of the main job: the walk-forward (training/walk_forward.py: per refit, every
family searched on Ray Tune, the baselines fitted, validation and the out-of-sample segment scored),
stitched forecasts written and measured, every refit's models registered."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig, WalkForwardConfig, walk_forward
from rayfolio.data.store import FeatureStore
from rayfolio.training.cards import Calendar, ForecasterCard, NormalizerParams, forecaster_name
from rayfolio.training.config import ForecastersConfig
from rayfolio.training.ensemble import seed_file
from rayfolio.training.evaluate import forecast_frame, metrics_table
from rayfolio.training.panel import Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry
from rayfolio.training.tune import SearchOutcome
from rayfolio.training.walk_forward import RefitResult, run_refits, stitch

logger = logging.getLogger(__name__)

# Where the last refit's models go: "auto" (production if a model has none yet, else staging) or
# "staging" (a retraining for review: never production, whatever the registry holds).
LastRefitStage = Literal["auto", "staging"]


@dataclass(frozen=True)
class ForecastStage:
    metrics: pd.DataFrame  # model, horizon, split, IC ... long-short Sharpe; test = the stitched walk-forward
    searches: dict[str, SearchOutcome]  # the last refit's (the versions the service gets)
    registered: dict[str, tuple[str, str]]  # model name -> (version, stage) of the last refit
    forecasts_path: Path
    refits: tuple[RefitSummary, ...] = ()
    scored: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None  # model -> split -> (t, scores)


@dataclass(frozen=True)
class RefitSummary:
    """One walk-forward refit as the report shows it."""

    index: int
    splits: SplitConfig
    versions: dict[str, str]  # forecaster name -> registered version
    seconds: float
    test_rank_ic: dict[str, dict[int, float]]  # model -> horizon -> mean Rank IC on its own segment
    resumed: tuple[str, ...] = ()


def run_forecasters(
    store: FeatureStore,
    splitter: PurgedDateSplitter,
    config: ForecastersConfig,
    run_dir: Path,
    registry: ModelRegistry,
    schedule: WalkForwardConfig | None = None,
    stage: LastRefitStage = "auto",
) -> ForecastStage:
    """The walk-forward of ``schedule`` (None: one refit on ``splitter``): every refit on Ray, its
    models registered (the last refit's at ``stage``, earlier ones for the record, without a stage),
    the out-of-sample segments stitched and measured as one series."""
    schedule = schedule or WalkForwardConfig()
    panel = Panel.from_store(store)
    refits = walk_forward(splitter.config, schedule.refit_every, splitter.purge, panel.dates)
    logger.info("walk-forward: %d refit(s) at %s", len(refits), ", ".join(str(r.start) for r in refits))
    results = run_refits(panel, refits, config, run_dir, parallel=schedule.parallel, retries=schedule.max_retries)
    scored = stitch(results)
    metrics = metrics_table(panel, scored, config.cost_bps)

    frames = [forecast_frame(panel, t, s, name, split) for name, by in scored.items() for split, (t, s) in by.items()]
    forecasts_path = run_dir / "forecasts.parquet"
    partial = forecasts_path.with_name(".forecasts.parquet.partial")
    pd.concat(frames, ignore_index=True).to_parquet(partial, index=False)
    partial.replace(forecasts_path)

    summaries, registered, history = [], {}, {family: [] for family in config.families}
    for result in results:
        last = result is results[-1]
        calendar = Calendar.of(store, result.refit.splitter)
        refit_metrics = metrics_table(panel, result.scored, config.cost_bps)
        registered = {
            forecaster_name(family): _register(registry, panel, calendar, result, family,
                                               refit_metrics[refit_metrics.model == family],
                                               stage=stage if last else None, history=history[family])
            for family in result.searches
        }  # fmt: skip
        for family in result.searches:
            history[family].append({"refit": result.refit.index, "version": registered[forecaster_name(family)][0]})
        on_test = refit_metrics[refit_metrics.split == "test"]
        summaries.append(
            RefitSummary(
                result.refit.index, result.refit.splitter.config,
                {name: version for name, (version, _) in registered.items()}, result.seconds,
                {m: dict(zip(g.horizon, g.rank_ic, strict=True)) for m, g in on_test.groupby("model")},
                tuple(result.resumed),
            )
        )  # fmt: skip
    return ForecastStage(metrics, results[-1].searches, registered, forecasts_path, tuple(summaries), scored)


def _register(
    registry: ModelRegistry,
    panel: Panel,
    calendar: Calendar,
    result: RefitResult,
    family: str,
    metrics: pd.DataFrame,
    stage: str | None,
    history: list[dict],
) -> tuple[str, str | None]:
    """Register a refit's chosen model of ``family`` and its extra seeds, one ensemble member
    (``stage`` "auto": production if the model has none yet, else staging; None: no stage).
    ``history``: the versions of the walk-forward's earlier refits, so that a backtest of this
    version can replay each date with the models that existed then."""
    outcome, seeds = result.searches[family], result.seeds[family]
    card = ForecasterCard(
        train=outcome.best_config,
        feature_names=result.feature_names,
        horizons=panel.horizons,
        normalizer=NormalizerParams.of(result.normalizer),
        symbols=tuple(panel.symbols.tolist()),
        calendar=calendar,
    )
    version = registry.register(
        card,
        {WEIGHTS: outcome.model.state_dict()} | {seed_file(i + 1): m.state_dict() for i, m in enumerate(seeds)},
        metrics={
            "seeds": 1 + len(seeds),
            "walk_forward_refit": result.refit.index,
            "walk_forward_history": list(history),
            "validation_rank_ic_search": outcome.best.val_rank_ic,
            "configurations_tried": len(outcome.trials),
            "deflated_sharpe": outcome.deflated_sharpe,
            "by_split_and_horizon": metrics.drop(columns="model").to_dict("records"),
        },
        stage=stage,
    )
    return version.version, registry.stage_of(version)
