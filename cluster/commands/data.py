"""``rayfolio data prepare|show``: build and inspect feature stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address


def _horizons(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"horizons are comma-separated trading-day counts, got {text!r}") from None


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
    prepare.set_defaults(func=_prepare)

    show = data_commands.add_parser("show", help="summary and feature statistics of a feature store")
    show.add_argument("store", type=Path, nargs="?", help="store directory (default: the config's run store)")
    show.add_argument("--config", type=Path, help="run config whose store to show (default: the quickstart)")
    show.set_defaults(func=_show)


def _with_overrides(config, args: argparse.Namespace):
    data = config.data
    synthetic = data.synthetic.model_copy(
        update={
            k: v for k, v in (("n_assets", args.assets), ("n_days", args.days), ("seed", args.seed)) if v is not None
        }
    )
    update = {"synthetic": type(data.synthetic).model_validate(synthetic.model_dump())}
    if args.source is not None:
        update["source"] = args.source
    if args.horizons is not None:
        update["horizons"] = args.horizons
    new_data = type(data).model_validate({**data.model_dump(), **update})
    return config.model_copy(update={"data": new_data})


def _prepare(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.sources import make_source
    from rayfolio.data.store import prepare_feature_store

    config = _with_overrides(load_config(args.config), args)
    with ray_connection(config.ray, args.address):
        source = make_source(config.data.source, config.data.synthetic.to_config())
        summary = prepare_feature_store(source, args.out, config.data.horizons)
    print("\n".join(summary.lines()))


def _show(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.report import table
    from rayfolio.data.store import FeatureStore

    store = FeatureStore(load_config(args.config).store_dir(args.store))
    store.verify()
    print("\n".join(store.summary().lines()))
    print(table(store.coverage()))
