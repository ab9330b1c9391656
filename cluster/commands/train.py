"""``rayfolio train`` and ``rayfolio tune``: forecasters searched on Ray Tune over an
existing feature store, scored on validation against the baselines, and registered
(stage auto: production if the model has none yet, else staging)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from rayfolio.cluster.commands.common import config_and_address, positive_int, registry_option
from rayfolio.training.config import Family

FAMILIES = get_args(Family)


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    config_and_address(parser)
    parser.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features from `rayfolio run`)")
    registry_option(parser)
    parser.add_argument("--out", type=Path, help="Tune trials and forecasts (default: runs/<name>/<command>)")
    parser.set_defaults(func=_train)
    return parser


def register(commands) -> None:
    train = _common(
        commands.add_parser("train", help="search one forecaster family with the config's search, register the best")
    )
    train.add_argument("--family", required=True, choices=FAMILIES, help="the forecaster family to train")
    tune = _common(commands.add_parser("tune", help="`train` with another search size (--samples configurations)"))
    tune.add_argument(
        "--family", choices=FAMILIES, action="append", help="a family to search, repeatable (default: the config's)"
    )
    tune.add_argument(
        "--samples", type=positive_int, required=True, help="configurations to try per family (the config's search)"
    )


def _train(args: argparse.Namespace) -> None:
    import pandas as pd

    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.splits import PurgedDateSplitter
    from rayfolio.data.store import FeatureStore
    from rayfolio.training.baselines import BASELINES
    from rayfolio.training.cards import forecaster_name
    from rayfolio.training.registry import ModelRegistry
    from rayfolio.training.stage import run_forecasters

    config = load_config(args.config)
    store = FeatureStore(config.store_dir(args.store))
    store.verify()
    splitter = PurgedDateSplitter(config.splits, purge=max(store.horizons) + store.label_lag)
    registry = ModelRegistry(config.registry_root(args.registry))
    forecasters = config.forecasters
    families = [args.family] if isinstance(args.family, str) else args.family or forecasters.families
    update = {"families": tuple(dict.fromkeys(families))}
    if args.command == "tune":
        update["search"] = forecasters.search.model_copy(update={"num_samples": args.samples})
    forecasters = forecasters.model_copy(update=update)
    out = (args.out or config.run_dir / args.command).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with ray_connection(config.ray, args.address):
        stage = run_forecasters(store, splitter, forecasters, out, registry)

    validation = stage.metrics[stage.metrics.split == "validation"]
    rows = []
    for family, outcome in stage.searches.items():
        name = forecaster_name(family)
        version, assigned = stage.registered[name]
        ic = validation[validation.model == family].set_index("horizon")["rank_ic"]
        rows.append(
            {"model": name, "version": version, "stage": assigned, "configurations": len(outcome.trials),
             "deflated Sharpe": round(outcome.deflated_sharpe, 3)}
            | {f"val Rank IC {h}d": round(v, 4) for h, v in ic.items()}
        )  # fmt: skip
    print(pd.DataFrame(rows).to_string(index=False))
    best = validation[validation.model.isin(BASELINES)].groupby("horizon")["rank_ic"].max()
    print("best baseline val Rank IC: " + ", ".join(f"{h}d {v:.4f}" for h, v in best.items()))
    # The same as a file: what a training job submitted over HTTP shows as its metrics (serving/jobs.py).
    summary = {"models": rows, "best_baseline_val_rank_ic": {f"{h}d": float(v) for h, v in best.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(f"registry: {registry.root}")
    print(f"forecasts: {stage.forecasts_path}")
