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
    from rayfolio.data.sources import make_source
    from rayfolio.data.store import prepare_feature_store
    from rayfolio.data.validate import validate_before_ray

    config = load_config(args.config, _overrides(args))
    source = make_source(config.data.source, config.data.synthetic.to_config())
    validate_before_ray(source)  # a small local file is refused in seconds, before Ray starts
    with ray_connection(config.ray, args.address):
        summary = prepare_feature_store(source, args.out, config.data.horizons, feature_set=config.data.features,
                                        label_lag=config.data.label_lag)  # fmt: skip
    print("\n".join(summary.lines()))


def _show(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.data.markdown import table
    from rayfolio.data.store import FeatureStore

    store = FeatureStore(load_config(args.config).store_dir(args.store))
    store.verify()
    print("\n".join(store.summary().lines()))
    print(table(store.coverage()))
