"""``rayfolio explanations refresh``: the production forecasters' explanations, precomputed per date."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, iso_date, positive_int, registry_option
from rayfolio.cluster.explanation_refresh import DEFAULT_DAYS, PRECOMPUTE_ASSET_DATES


def register(commands) -> None:
    explanations = commands.add_parser("explanations", help="forecast explanations precomputed per date")
    sub = explanations.add_subparsers(dest="explanations_command", required=True, metavar="EXPLANATIONS_COMMAND")
    refresh = registry_option(config_and_address(sub.add_parser(
        "refresh",
        help="explain the store's latest dates with the production forecasters (Ray tasks) and store them",
        description="Computes the production ensemble's expected-return attributions (expected gradients, every "
        "horizon) for the store's latest trading days, or every date from --since on, as Ray tasks, and writes "
        "them to the explanation store the service reads (default <store's parent>/explanations, keyed by the "
        "forecaster versions and the service's sample settings); dates already stored are skipped. The default "
        f"is the latest {DEFAULT_DAYS} trading days, not every forecast date: a date costs ~2.5 s of one core on "
        "the quickstart models, and the service computes and stores any other date on its first request.",
    )))  # fmt: skip
    refresh.add_argument("--store", type=Path, help="feature store (default: the config's run store)")
    refresh.add_argument("--explanations", type=Path,
                         help="explanation store directory (default: <store's parent>/explanations)")  # fmt: skip
    when = refresh.add_mutually_exclusive_group()
    when.add_argument("--since", type=iso_date, help="every store date from this day (YYYY-MM-DD) on")
    when.add_argument("--days", type=positive_int, default=None,
                      help=f"the store's latest N trading days (default {DEFAULT_DAYS}, fewer above "
                           f"{PRECOMPUTE_ASSET_DATES // DEFAULT_DAYS} assets: at most "
                           f"{PRECOMPUTE_ASSET_DATES:,} date x asset)")  # fmt: skip
    refresh.set_defaults(func=_refresh)


def _refresh(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.explanation_refresh import refresh_explanations
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.store import FeatureStore

    config = load_config(args.config)
    store = config.store_dir(args.store)
    FeatureStore(store)  # not a store: one line, before Ray starts
    with ray_connection(config.ray, args.address):
        summary = refresh_explanations(store, config.registry_root(args.registry), config.splits,
                                       root=args.explanations, since=args.since, days=args.days)  # fmt: skip
    print(summary.line())
