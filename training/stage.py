"""The forecaster stage of the main job: search every family on Ray Tune, fit
the baselines, score validation and test, write forecasts, register models."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore
from rayfolio.training.baselines import BASELINES, RidgeBaseline, momentum_12_1, reversal_5d
from rayfolio.training.cards import Calendar, ForecasterCard, NormalizerParams, forecaster_name
from rayfolio.training.config import ForecastersConfig
from rayfolio.training.ensemble import seed_file
from rayfolio.training.evaluate import forecast_frame, metrics_table
from rayfolio.training.panel import Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry
from rayfolio.training.train import TrainingData, predict, prepare_training_data, train_forecaster
from rayfolio.training.tune import SearchOutcome, search_family

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForecastStage:
    metrics: pd.DataFrame  # model, horizon, split, IC ... long-short Sharpe
    searches: dict[str, SearchOutcome]
    registered: dict[str, tuple[str, str]]  # model name -> (version, stage)
    forecasts_path: Path


def _split_indices(panel: Panel, splitter: PurgedDateSplitter, window: int) -> dict[str, np.ndarray]:
    """Validation and test date indices with ``window`` days of history behind them."""
    parts = splitter.split_dates(panel.dates)
    out = {}
    for split in ("validation", "test"):
        idx = panel.date_index(parts[split])
        out[split] = idx[idx >= window - 1]
    return out


def run_forecasters(
    store: FeatureStore,
    splitter: PurgedDateSplitter,
    config: ForecastersConfig,
    run_dir: Path,
    registry: ModelRegistry,
) -> ForecastStage:
    panel = Panel.from_store(store)
    data = prepare_training_data(panel, splitter, config.train)
    searches = {}
    for family in config.families:
        logger.info("searching %s: %d configurations on Ray Tune", family, config.search.num_samples)
        base = config.train.model_copy(update={"family": family})
        searches[family] = search_family(
            data, base, config.search, config.scaling, run_dir / "tune", f"{family}-search", config.cost_bps
        )
        logger.info(
            "%s: best validation Rank IC %.4f, deflated Sharpe %.2f",
            family,
            searches[family].best.val_rank_ic,
            searches[family].deflated_sharpe,
        )

    seeds = {family: _extra_seeds(data, o, config, run_dir) for family, o in searches.items()}
    splits = _split_indices(panel, splitter, max((*config.search.window, config.train.window)))
    scorers = {
        name: (lambda t, o=o, more=seeds[name]: np.mean([predict(m, data, t, o.best_config.window)
                                                         for m in (o.model, *more)], axis=0))
        for name, o in searches.items()
    }  # fmt: skip
    ridge = RidgeBaseline().fit(data)
    scorers |= {
        "momentum_12_1": lambda t: momentum_12_1(data, t),
        "reversal_5d": lambda t: reversal_5d(data, t),
        "ridge": lambda t: ridge.predict(data, t),
    }
    scored = {name: {split: (t, score(t)) for split, t in splits.items()} for name, score in scorers.items()}
    metrics = metrics_table(panel, scored, config.cost_bps)

    frames = [forecast_frame(panel, t, s, name, split) for name, by in scored.items() for split, (t, s) in by.items()]
    forecasts_path = run_dir / "forecasts.parquet"
    partial = forecasts_path.with_name(".forecasts.parquet.partial")
    pd.concat(frames, ignore_index=True).to_parquet(partial, index=False)
    partial.replace(forecasts_path)

    calendar = Calendar.of(store, splitter)
    registered = {
        forecaster_name(family): _register(
            registry, panel, calendar, data, outcome, seeds[family], metrics[metrics.model == family]
        )
        for family, outcome in searches.items()
    }
    return ForecastStage(metrics, searches, registered, forecasts_path)


def _register(
    registry: ModelRegistry,
    panel: Panel,
    calendar: Calendar,
    data: TrainingData,
    outcome: SearchOutcome,
    seeds: list[torch.nn.Module],
    metrics: pd.DataFrame,
) -> tuple[str, str]:
    """Register the search's chosen model and its extra seeds, one ensemble member (stage auto:
    production if the model has none yet, else staging)."""
    card = ForecasterCard(
        train=outcome.best_config,
        feature_names=data.feature_names,
        horizons=data.horizons,
        normalizer=NormalizerParams.of(data.normalizer),
        symbols=tuple(panel.symbols.tolist()),
        calendar=calendar,
    )
    version = registry.register(
        card,
        {WEIGHTS: outcome.model.state_dict()} | {seed_file(i + 1): m.state_dict() for i, m in enumerate(seeds)},
        metrics={
            "seeds": 1 + len(seeds),
            "validation_rank_ic_search": outcome.best.val_rank_ic,
            "configurations_tried": len(outcome.trials),
            "deflated_sharpe": outcome.deflated_sharpe,
            "by_split_and_horizon": metrics.drop(columns="model").to_dict("records"),
        },
    )
    return version.version, registry.stage_of(version)


def _extra_seeds(
    data: TrainingData, outcome: SearchOutcome, config: ForecastersConfig, run_dir: Path
) -> list[torch.nn.Module]:
    """``seeds_per_model - 1`` more trainings of the chosen configuration on Ray Train, other seeds."""
    out = []
    for i in range(1, config.seeds_per_model):
        seeded = outcome.best_config.model_copy(update={"seed": outcome.best_config.seed + 1000 * i})
        logger.info("%s: seed %d of %d of the chosen configuration", outcome.family, i + 1, config.seeds_per_model)
        out.append(train_forecaster(data, seeded, config.scaling, run_dir / "tune", f"{outcome.family}-seed{i}").model)
    return out


def beats_baselines(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per network and horizon: its Rank IC against the best baseline's, on ``split``."""
    on = metrics[metrics.split == split]
    best_baseline = on[on.model.isin(BASELINES)].groupby("horizon")["rank_ic"].max()
    networks = on[~on.model.isin(BASELINES)].set_index(["model", "horizon"])["rank_ic"]
    frame = networks.to_frame("rank_ic").reset_index()
    frame["best_baseline_rank_ic"] = frame["horizon"].map(best_baseline)
    frame["beats_baselines"] = frame["rank_ic"] > frame["best_baseline_rank_ic"]
    return frame
