"""Hyperparameter search on Ray Tune: each trial is a Ray Train run.

The Train V2 pattern: a Tune function builds a ``TorchTrainer`` whose
``TuneReportCallback`` forwards every epoch's metrics to Tune, so ASHA can stop
weak trials early. After the search every tried configuration's best model is
scored on validation, and the chosen one's long-short Sharpe is deflated by
the number of configurations tried (Bailey and Lopez de Prado).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from rayfolio.data.conventions import DEFAULT_COST_BPS
from rayfolio.data.verbosity import tune_verbosity
from rayfolio.training.config import ScalingOptions, SearchConfig, TrainConfig
from rayfolio.training.metrics import deflated_sharpe, long_short_returns
from rayfolio.training.train import (
    META_FILE,
    TrainingData,
    build_trainer,
    load_checkpoint_model,
    predict,
    run_config,
)

# The Tune function only waits on its trainer. Ray refuses an empty bundle, so it
# holds a token share; anything more would starve Ray Data, whose split
# coordinator needs one whole free CPU to feed the workers.
TRIAL_CPUS = 0.01


@dataclass(frozen=True)
class TrialSummary:
    trial: str
    config: dict
    val_rank_ic: float
    epochs: int
    checkpoint: str
    val_sharpe_per_day: float  # of the trial's long-short portfolio, not annualised


@dataclass(frozen=True)
class SearchOutcome:
    family: str
    best: TrialSummary
    trials: list[TrialSummary]
    deflated_sharpe: float  # P[chosen model's true long-short Sharpe > best of N unskilled trials]
    best_config: TrainConfig
    model: object


def concurrent_trials(scaling: ScalingOptions, requested: int | None) -> int:
    """Trials that fit at once, leaving one CPU for Ray Data feeding the workers."""
    if requested is not None:
        return requested
    per_trial = scaling.num_workers * scaling.cpus_per_worker + TRIAL_CPUS
    spare = ray.cluster_resources().get("CPU", 1) - 1.0
    return max(1, math.floor(spare / per_trial))


def _best_checkpoint(run_dir: Path) -> tuple[str, float, int] | None:
    """The trial's best epoch on disk: (path, val_rank_ic, epoch)."""
    best = None
    for meta_path in run_dir.glob(f"checkpoint_*/{META_FILE}"):
        meta = json.loads(meta_path.read_text())
        if best is None or meta["val_rank_ic"] > best[1]:
            best = (str(meta_path.parent), meta["val_rank_ic"], meta["epoch"])
    return best


def search_family(
    data: TrainingData,
    base: TrainConfig,
    search: SearchConfig,
    scaling: ScalingOptions,
    storage: Path,
    name: str,
    cost_bps: float = DEFAULT_COST_BPS,
) -> SearchOutcome:
    """Random search with ASHA over one family; returns the best model and the DSR."""
    data_ref, train_idx = ray.put(data), data.train_idx  # the closure must not capture `data` itself
    trials_dir = storage / f"{name}-trials"

    def trial(params: dict) -> None:
        config = base.model_copy(update=params)
        run_name = f"trial-{tune.get_context().get_trial_id()}"
        run = run_config(run_name, trials_dir, scaling.max_failures, callbacks=[TuneReportCallback()])
        build_trainer(config, data_ref, train_idx, scaling, run).fit()

    # Tune registers a function trainable in the job's registry under its __name__: two searches
    # running at once in one job (parallel walk-forward refits) would both run whichever "trial"
    # registered last, on its data. A name per search keeps each on its own closure.
    trial.__name__ = f"{name}-{uuid.uuid4().hex[:12]}"

    space = {
        "lr": tune.loguniform(*search.lr),
        "hidden": tune.choice(list(search.hidden)),
        "layers": tune.choice(list(search.layers)),
        "dropout": tune.uniform(*search.dropout),
        "window": tune.choice(list(search.window)),
    }
    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": TRIAL_CPUS}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_rank_ic",
            mode="max",
            scheduler=ASHAScheduler(max_t=base.epochs, grace_period=search.grace_period),
            # Tune ignores max_concurrent_trials when given a generator: it takes its own.
            search_alg=BasicVariantGenerator(
                random_state=search.seed, max_concurrent=concurrent_trials(scaling, search.max_concurrent_trials)
            ),
            num_samples=search.num_samples,
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=tune_verbosity()),
    )
    results = tuner.fit()
    trials, returns_by_trial = [], {}
    for result in results:
        if result.error is not None:
            continue
        found = _best_checkpoint(trials_dir / f"trial-{result.metrics['trial_id']}")
        if found is None:
            continue
        path, score, epoch = found
        config, model, _ = load_checkpoint_model(path, data)
        t = data.val_idx[data.val_idx >= config.window - 1]
        scores = predict(model, data, t, config.window)
        # Long-short on the first horizon's signal: one portfolio per model.
        returns = long_short_returns(scores[..., 0], data.next_returns[t], cost_bps)
        sd = returns.std(ddof=1)
        trials.append(
            TrialSummary(result.metrics["trial_id"], config.model_dump(), score, epoch + 1, path,
                         float(returns.mean() / sd) if sd > 0 else float("nan"))
        )  # fmt: skip
        returns_by_trial[path] = returns
    if not trials:
        raise RuntimeError(f"every {base.family} trial failed; see {storage / name}")
    best = max(trials, key=lambda s: s.val_rank_ic)
    config, model, _ = load_checkpoint_model(best.checkpoint, data)
    dsr = deflated_sharpe(returns_by_trial[best.checkpoint], np.array([s.val_sharpe_per_day for s in trials]))
    return SearchOutcome(base.family, best, trials, dsr, config, model)
