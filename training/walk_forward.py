"""Walk-forward refits on Ray: each refit searches, trains and scores on its own splits, and the
refits' out-of-sample segments are stitched into one continuous forecast series.

A refit is independent of the others (its own normaliser, searches, seeds, baselines), so refits run
as parallel Ray tasks, as many at once as the cluster holds trials for: a cluster of N nodes runs N
refits at once. Each task only drives (its Tune trials hold the CPUs), so it asks for no CPU. A
refit writes every finished family search under its directory; a refit that fails is run again
(``max_retries``) and picks up those searches instead of repeating them, while a Train worker that
dies mid-search resumes from its epoch checkpoint (``scaling.max_failures``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

from rayfolio.data.splits import Refit
from rayfolio.training.baselines import RidgeBaseline, momentum_12_1, reversal_5d
from rayfolio.training.config import ForecastersConfig
from rayfolio.training.panel import Normalizer, Panel
from rayfolio.training.train import TrainingData, predict, prepare_training_data, train_forecaster
from rayfolio.training.tune import TRIAL_CPUS, SearchOutcome, search_family

logger = logging.getLogger(__name__)

Scored = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (date indices (T,), scores (T, N, H))


@dataclass
class RefitResult:
    """What one refit hands back: its chosen models and every model's scores on its validation
    window and on its out-of-sample segment (``test``)."""

    refit: Refit
    searches: dict[str, SearchOutcome]
    seeds: dict[str, list[torch.nn.Module]]  # family -> extra seeds of the chosen configuration
    normalizer: Normalizer
    feature_names: tuple[str, ...]
    scored: dict[str, Scored]  # model (family or baseline) -> split -> (t, scores)
    seconds: float
    ridge_alpha: float | None = None
    resumed: list[str] = field(default_factory=list)  # family searches picked up from an earlier attempt


def refit_dir(run_dir: Path, refit: Refit) -> Path:
    return run_dir / "walk_forward" / f"refit-{refit.index:02d}-{refit.start:%Y%m%d}"


def _key(panel: Panel, refit: Refit, config: ForecastersConfig) -> str:
    """What a saved search belongs to: the same splits, config and panel shape (a stale one is ignored)."""
    payload = json.dumps({"splits": refit.splitter.config.model_dump(mode="json"), "purge": refit.splitter.purge,
                          "config": config.model_dump(mode="json"), "panel": [str(panel.dates[0]),
                          str(panel.dates[-1]), *panel.symbols.tolist(), *panel.feature_names]})  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _segment(panel: Panel, refit: Refit, split: str, window: int) -> np.ndarray:
    """Date indices of one split of the refit that have ``window`` days of history behind them."""
    idx = panel.date_index(refit.splitter.split_dates(panel.dates)[split])
    return idx[idx >= window - 1]


def fit_refit(panel: Panel, refit: Refit, config: ForecastersConfig, run_dir: Path) -> RefitResult:
    """One refit: search every family on Ray Tune, train the extra seeds, fit the baselines, score
    validation and the out-of-sample segment. Finished searches are saved and reused on a retry."""
    started = time.perf_counter()
    here = refit_dir(run_dir, refit)
    here.mkdir(parents=True, exist_ok=True)
    key = _key(panel, refit, config)
    data = prepare_training_data(panel, refit.splitter, config.train)
    searches, resumed = {}, []
    for family in config.families:
        saved = here / f"{family}-search-{key}.pkl"
        if saved.exists():
            searches[family] = pickle.loads(saved.read_bytes())  # our own file, written below
            resumed.append(family)
            continue
        logger.info("refit %d (%s on): searching %s, %d configurations", refit.index, refit.start, family,
                    config.search.num_samples)  # fmt: skip
        base = config.train.model_copy(update={"family": family})
        outcome = search_family(data, base, config.search, config.scaling, here / "tune", f"{family}-search",
                                config.cost_bps)  # fmt: skip
        partial = saved.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(outcome))
        partial.replace(saved)
        searches[family] = outcome
    seeds = {family: _extra_seeds(data, o, config, here) for family, o in searches.items()}
    window = max((*config.search.window, config.train.window))
    splits = {split: _segment(panel, refit, split, window) for split in ("validation", "test")}
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
    return RefitResult(refit, searches, seeds, data.normalizer, data.feature_names, scored,
                       time.perf_counter() - started, ridge.alpha_, resumed)  # fmt: skip


def _extra_seeds(
    data: TrainingData, outcome: SearchOutcome, config: ForecastersConfig, here: Path
) -> list[torch.nn.Module]:
    """``seeds_per_model - 1`` more trainings of the chosen configuration on Ray Train, other seeds."""
    out = []
    for i in range(1, config.seeds_per_model):
        seeded = outcome.best_config.model_copy(update={"seed": outcome.best_config.seed + 1000 * i})
        logger.info("%s: seed %d of %d of the chosen configuration", outcome.family, i + 1, config.seeds_per_model)
        out.append(train_forecaster(data, seeded, config.scaling, here / "tune", f"{outcome.family}-seed{i}").model)
    return out


def refits_at_once(config: ForecastersConfig, n_refits: int, requested: int | None) -> int:
    """Refits to run at once: ``requested``, else one per trial the cluster holds beside one CPU
    for Ray Data (the same rule as the searches' concurrency); never more than there are refits."""
    if requested is not None:
        return max(1, min(requested, n_refits))
    per_trial = config.scaling.num_workers * config.scaling.cpus_per_worker + TRIAL_CPUS
    spare = ray.cluster_resources().get("CPU", 1) - 1.0
    return max(1, min(n_refits, math.floor(spare / per_trial)))


def _attempts(panel: Panel, refit: Refit, config: ForecastersConfig, run_dir: Path, retries: int) -> RefitResult:
    """``fit_refit`` with up to ``retries`` more attempts (each resumes the finished searches)."""
    for attempt in range(retries + 1):
        try:
            return fit_refit(panel, refit, config, run_dir)
        except Exception:
            if attempt == retries:
                raise
            logger.exception("refit %d failed (attempt %d of %d); retrying from its saved searches",
                             refit.index, attempt + 1, retries + 1)  # fmt: skip
    raise AssertionError("unreachable")


@ray.remote(num_cpus=0)
def _refit_task(panel: Panel, refit: Refit, config: ForecastersConfig, run_dir: str, retries: int) -> RefitResult:
    return _attempts(panel, refit, config, Path(run_dir), retries)


def run_refits(
    panel: Panel,
    refits: list[Refit],
    config: ForecastersConfig,
    run_dir: Path,
    *,
    parallel: int | None = None,
    retries: int = 2,
) -> list[RefitResult]:
    """Every refit, ``parallel`` at a time as Ray tasks (1: one after another in this process);
    results in refit order."""
    at_once = refits_at_once(config, len(refits), parallel)
    if at_once == 1:
        return [_attempts(panel, r, config, run_dir, retries) for r in refits]
    # Refits share the cluster: each one's search runs as many trials at once as its share holds.
    share = max(1, refits_at_once(config, 10**6, None) // at_once)
    config = config.model_copy(update={"search": config.search.model_copy(update={"max_concurrent_trials": share})})
    panel_ref = ray.put(panel)
    queue, running, done = list(refits), {}, {}
    while queue or running:
        while queue and len(running) < at_once:
            refit = queue.pop(0)
            running[_refit_task.remote(panel_ref, refit, config, str(run_dir), retries)] = refit
        ready, _ = ray.wait(list(running), num_returns=1)
        refit = running.pop(ready[0])
        done[refit.index] = ray.get(ready[0])
        logger.info("refit %d (%s on) done in %.0f s", refit.index, refit.start, done[refit.index].seconds)
    return [done[r.index] for r in refits]


def stitch(results: list[RefitResult]) -> dict[str, Scored]:
    """Each model's out-of-sample scores across refits as one series (``test``), in date order, and
    the first refit's validation scores (``validation``): the segments do not overlap."""
    out = {}
    for name in results[0].scored:
        t = np.concatenate([r.scored[name]["test"][0] for r in results])
        scores = np.concatenate([r.scored[name]["test"][1] for r in results])
        if len(np.unique(t)) != len(t):
            raise ValueError(f"walk-forward segments overlap for {name}")
        out[name] = {"validation": results[0].scored[name]["validation"], "test": (t, scores)}
    return out
