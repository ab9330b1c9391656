"""``rayfolio forecasts refresh``: the production forecasts for the dates appended since the last refresh."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, registry_option


def register(commands) -> None:
    forecasts = commands.add_parser("forecasts", help="production forecasts kept per date")
    sub = forecasts.add_subparsers(dest="forecasts_command", required=True, metavar="FORECASTS_COMMAND")
    refresh = registry_option(config_and_address(sub.add_parser(
        "refresh",
        help="forecast the store's new dates with the production models (Ray tasks) and log them",
        description="Appends to the forecast log (default runs/<name>/forecasts/production.parquet) the "
        "production ensemble's forecasts for every store date after the last one logged by the same versions "
        "(the first time: from the last refit's test start). A running service picks up new store dates "
        "by itself (it watches the store's version).",
    )))  # fmt: skip
    refresh.add_argument("--store", type=Path, help="feature store (default: the config's run store)")
    refresh.add_argument(
        "--log", type=Path, help="forecast log file (default: runs/<name>/forecasts/production.parquet)"
    )
    refresh.set_defaults(func=_refresh)


def _refresh(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.forecast_refresh import refresh_forecasts
    from rayfolio.cluster.runtime import ray_connection

    config = load_config(args.config)
    log = args.log or config.run_dir / "forecasts" / "production.parquet"
    with ray_connection(config.ray, args.address):
        summary = refresh_forecasts(config.store_dir(args.store), config.registry_root(args.registry), log)
    print("\n".join(summary.lines()))
