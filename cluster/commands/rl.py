"""``rayfolio rl`` and ``rayfolio backtest``: allocation agents on an existing feature store."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, registry_option


def _stage_args(parser: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
    config_and_address(parser)
    parser.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features from `rayfolio run`)")
    registry_option(parser)
    parser.add_argument("--out", type=Path, help=f"output directory (default: runs/<name>/{out})")
    parser.set_defaults(func=_allocation)
    return parser


def register(commands) -> None:
    _stage_args(commands.add_parser("rl", help="search PPO/SAC agents on Ray Tune, register them, backtest"), "rl")
    _stage_args(
        commands.add_parser("backtest", help="walk-forward backtest of the production agents against the baselines"),
        "backtest",
    )


def _allocation(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import ConfigError, check_env_features, check_index_file, load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.cluster.served import production_ensemble, served_factory
    from rayfolio.data.markdown import Report, table
    from rayfolio.data.splits import PurgedDateSplitter
    from rayfolio.data.store import FeatureStore
    from rayfolio.rl.report import COMPARISON, allocation_section, backtest_section, served_section, tilt_section
    from rayfolio.rl.stage import backtest_production, run_allocation
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry

    config = load_config(args.config)
    store = FeatureStore(config.store_dir(args.store))
    store.verify()
    check_env_features(config, [*store.feature_names, *store.cross_sectional_feature_names],
                       f"the feature store {store.path}")  # fmt: skip
    check_index_file(config)
    splitter = PurgedDateSplitter(config.splits, purge=max(store.horizons) + store.label_lag)
    registry = ModelRegistry(config.registry_root(args.registry))
    panel = Panel.from_store(store)
    # The production forecasters' ensemble (the service's) with the walk-forward that made them.
    ensemble = production_ensemble(registry, panel) if registry.production("forecaster") else None
    if config.allocation.env.forecast_features and ensemble is None:
        raise ConfigError(
            f"allocation.env.forecast_features is on but {registry.root} has no production forecaster: "
            "run `rayfolio run` (or `rayfolio train`), or turn it off"
        )
    out = (args.out or config.run_dir / args.command).resolve()
    served = served_factory(config, registry, panel, ensemble, out) if ensemble is not None else None
    out.mkdir(parents=True, exist_ok=True)
    report = Report(f"rayfolio {args.command} '{config.name}'")
    if args.command == "rl":
        with ray_connection(config.ray, args.address):
            stage = run_allocation(store, splitter, config.allocation, out, registry, source=config.data.source,
                                   ensemble=ensemble, served=served)  # fmt: skip
        served_section(report, stage.backtest, stage.served, config.allocation)
        tilt_section(report, stage)
        allocation_section(report, stage, config.allocation, out)
        result = stage.backtest
    else:  # the production versions: what `rayfolio serve` serves
        result, notes, replayed = backtest_production(registry, panel, splitter, config.allocation,
                                                      source=config.data.source, ensemble=ensemble, served=served,
                                                      out=out)  # fmt: skip
        served_section(report, result, replayed, config.allocation)
        backtest_section(report, result, notes, config.allocation, out)
    print(table(result.metrics[COMPARISON], floatfmt=".3f"))
    print(f"report: {report.write(out / 'report.md')}")
