"""``rayfolio data prepare|show``: build and inspect feature stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, iso_date


def _horizons(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"horizons are comma-separated trading-day counts, got {text!r}") from None


def _window_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=iso_date, help="use only bars dated on or after this day (YYYY-MM-DD)")
    parser.add_argument("--end", type=iso_date, help="use only bars dated on or before this day (YYYY-MM-DD)")


def register(commands) -> None:
    data = commands.add_parser("data", help="feature store commands")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = config_and_address(data_commands.add_parser("prepare", help="build a feature store on Ray Data"))
    prepare.add_argument("--source", help="'sp500' (embedded), 'synthetic', or a CSV/Parquet file, directory or URI")
    prepare.add_argument("--out", type=Path, required=True, help="feature store directory to write")
    prepare.add_argument("--horizons", type=_horizons, help="label horizons, e.g. 5,20,60")
    prepare.add_argument("--assets", type=int, help="synthetic: number of assets")
    prepare.add_argument("--days", type=int, help="synthetic: number of business days")
    prepare.add_argument("--seed", type=int, help="synthetic: random seed")
    _window_options(prepare)
    prepare.set_defaults(func=_prepare)

    append = data_commands.add_parser(
        "append",
        help="append new bars to a feature store on Ray Data (new dates only; no rebuild)",
        description="Append the bars dated after each symbol's last stored day. Bars the store already holds, "
        "re-sent unchanged, are skipped; a changed one (a restatement), a bar on an old date the store lacks and "
        "columns that differ from the store's are refused, and nothing is written.",
    )
    append.add_argument("store", type=Path, help="feature store directory")
    append.add_argument("--source", required=True, help="new bars: a CSV/Parquet file, directory or URI, or 'sp500'")
    append.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local dev mode)")
    _window_options(append)
    append.set_defaults(func=_append)

    show = data_commands.add_parser("show", help="summary and feature statistics of a feature store")
    show.add_argument("store", type=Path, nargs="?", help="store directory (default: the config's run store)")
    show.add_argument("--config", type=Path, help="run config whose store to show (default: the quickstart)")
    show.set_defaults(func=_show)


def _overrides(args: argparse.Namespace) -> dict:
    """The flags given, as config sections: validated with the config file, named by their keys."""
    synthetic = {"n_assets": args.assets, "n_days": args.days, "seed": args.seed}
    data = {"source": args.source, "horizons": args.horizons}
    given = {k: v for k, v in data.items() if v is not None}
    if any(v is not None for v in synthetic.values()):
        given["synthetic"] = {k: v for k, v in synthetic.items() if v is not None}
    return {"data": given}


def _prepare(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.sources import make_source, within
    from rayfolio.data.store import prepare_feature_store
    from rayfolio.data.validate import validate_before_ray

    config = load_config(args.config, _overrides(args))
    source = within(make_source(config.data.source, config.data.synthetic.to_config()), args.start, args.end)
    validate_before_ray(source)  # a small local file is refused in seconds, before Ray starts
    with ray_connection(config.ray, args.address):
        summary = prepare_feature_store(source, args.out, config.data.horizons, feature_set=config.data.features,
                                        label_lag=config.data.label_lag)  # fmt: skip
    print("\n".join(summary.lines()))


def _append(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import RayConfig
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.append import append_to_store
    from rayfolio.data.sources import make_source, within
    from rayfolio.data.store import FeatureStore
    from rayfolio.data.validate import validate_before_ray

    FeatureStore(args.store)  # not a store: refused before Ray starts
    source = within(make_source(args.source), args.start, args.end)
    validate_before_ray(source)
    with ray_connection(RayConfig(), args.address):
        summary = append_to_store(args.store, source)
    print("\n".join(summary.lines()))


def _show(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.data.markdown import table
    from rayfolio.data.store import FeatureStore

    store = FeatureStore(load_config(args.config).store_dir(args.store))
    store.verify()
    print("\n".join(store.summary().lines()))
    print(table(store.coverage()))
