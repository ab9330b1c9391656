"""``rayfolio rl`` and ``rayfolio backtest``: allocation agents on an existing feature store."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, registry_option


def _stage_args(parser: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
    config_and_address(parser)
    parser.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features from `rayfolio run`)")
    registry_option(parser)
    parser.add_argument(
        "--forecasts", type=Path, help="forecasts.parquet for the top-k baseline (default: the run's, if any)"
    )
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
    from rayfolio.data.markdown import Report, table
    from rayfolio.data.splits import PurgedDateSplitter
    from rayfolio.data.store import FeatureStore
    from rayfolio.rl.market import MarketData
    from rayfolio.rl.report import COMPARISON, allocation_section, backtest_section
    from rayfolio.rl.stage import backtest, load_agents, read_forecasts, run_allocation
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry

    config = load_config(args.config)
    store = FeatureStore(config.store_dir(args.store))
    store.verify()
    check_env_features(config, store.feature_names, f"the feature store {store.path}")
    check_index_file(config)
    forecasts = args.forecasts or config.run_dir / "forecasts.parquet"
    if args.forecasts is not None and not forecasts.is_file():
        raise ConfigError(f"{forecasts}: no such forecasts file")
    if config.allocation.env.forecast_features and not forecasts.is_file():
        raise ConfigError(
            f"allocation.env.forecast_features is on but there are no forecasts at {forecasts}: "
            "run `rayfolio run` (or pass --forecasts FILE), or turn it off"
        )
    splitter = PurgedDateSplitter(config.splits, purge=max(store.horizons))
    registry = ModelRegistry(config.registry_root(args.registry))
    out = (args.out or config.run_dir / args.command).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(f"rayfolio {args.command} '{config.name}'")
    if args.command == "rl":
        with ray_connection(config.ray, args.address):
            stage = run_allocation(
                store, splitter, config.allocation, out, registry, source=config.data.source, forecasts_path=forecasts
            )
        allocation_section(report, stage, config.allocation, out)
        result = stage.backtest
    else:
        panel = Panel.from_store(store)
        frame = read_forecasts(forecasts)
        agents, loaded = load_agents(registry, panel, splitter, config.allocation, frame)
        market = MarketData.from_panel(panel, splitter, config.allocation.env, forecasts=frame)
        result, notes = backtest(market, config.allocation, agents, source=config.data.source, forecasts=frame, out=out)
        backtest_section(report, result, (*loaded, *notes), config.allocation, out)
    print(table(result.metrics[COMPARISON], floatfmt=".3f"))
    print(f"report: {report.write(out / 'report.md')}")
