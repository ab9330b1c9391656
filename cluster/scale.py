"""What a run's size did to it: the universe, the budgets that shrink as it grows, and the parallelism the
cluster gave each stage, as rows of the report's Run section.

Budgets that depend on the number of assets are not hidden: at 400 assets an epoch of forecaster
training keeps fewer dates than at 20 (``asset_days_per_epoch``), and the agents' budgets follow
``rl.config``'s rule; the report prints the values this run used. Parallelism is read from the
cluster this run had (nodes, CPUs, GPUs) through the same rules the stages schedule by, so the
report says what ran at once, not what a config asked for.
"""

from __future__ import annotations

import ray

from rayfolio.cluster.config import RunConfig
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.rl.config import budget_rows
from rayfolio.training.panel import Panel, sample_dates
from rayfolio.training.tune import concurrent_trials as forecaster_trials
from rayfolio.training.walk_forward import refits_at_once


def cluster_shape() -> str:
    """The Ray cluster this process is connected to, in words."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    resources = ray.cluster_resources()
    gpus = resources.get("GPU", 0)
    return f"{len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs" + (f", {gpus:g} GPUs" if gpus else ", no GPU")


def forecaster_rows(config: RunConfig, panel: Panel, splitter: PurgedDateSplitter, n_refits: int) -> dict[str, str]:
    """The forecaster stage's per-N budget and parallelism (call while connected to Ray)."""
    forecasters = config.forecasters
    train = forecasters.train
    dates = sample_dates(panel, splitter.split_dates(panel.dates)["train"], train.window)
    stride = train.date_stride(len(dates), len(panel.symbols))
    cap = f"{train.asset_days_per_epoch:,}" if train.asset_days_per_epoch else "none"
    scaling = forecasters.scaling
    return {
        "forecaster training dates per epoch (first refit)": (
            f"{len(dates[::stride]):,} of {len(dates):,} (1 in {stride}; "
            f"cap {cap} date x asset samples, train_stride {train.train_stride})"
        ),
        "forecaster trials at once (each a DDP run)": (
            f"{forecaster_trials(scaling, forecasters.search.max_concurrent_trials)} x "
            f"{scaling.num_workers} workers x {scaling.cpus_per_worker:g} CPU"
        ),
        "walk-forward refits at once": f"{refits_at_once(forecasters, n_refits, config.walk_forward.parallel)}"
        f" of {n_refits}",
    }


def allocation_rows(config: RunConfig, n_assets: int, n_features: int, searches: dict) -> dict[str, str]:
    """The agents' per-N budgets (rl.config's rule) and how each search ran on the cluster."""
    rows = budget_rows(config.allocation, n_assets, n_features)
    for algorithm, outcome in searches.items():
        rows[f"{algorithm.upper()} trials on Ray"] = outcome.parallelism.text()
    return rows
