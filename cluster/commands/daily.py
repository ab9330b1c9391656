"""``rayfolio daily``: the day-two cycle (append -> forecasts refresh -> explain -> drift -> live
performance -> check) with one summary table."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, iso_date, registry_option


def register(commands) -> None:
    daily = registry_option(config_and_address(commands.add_parser(
        "daily",
        help="the day-two cycle: append, forecasts refresh, explain, drift, live performance, check",
        description="Appends the new bars to the store, logs the production forecasts of the new dates, stores "
        "the explanations of the latest trading days it lacks (rayfolio explanations refresh), measures "
        "drift over the store's last 63 trading days and the live performance of the audit log's recommendations, "
        "then checks the levels: exit 3 when one is critical (with --submit, a staging retraining is submitted).",
    )))  # fmt: skip
    daily.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features)")
    daily.add_argument("--source", help="new bars: CSV/Parquet file, directory or URI, or 'sp500' (none: no append)")
    daily.add_argument("--start", type=iso_date, help="use only new bars dated on or after this day (YYYY-MM-DD)")
    daily.add_argument("--audit", help="audit log (default: runs/<name>/audit.db when it exists)")
    daily.add_argument("--out", type=Path, help="monitor files (default: runs/monitor)")
    daily.add_argument("--submit", action="store_true", help="on a critical level, submit the staging retraining")
    daily.set_defaults(func=_daily)


def _daily(args: argparse.Namespace) -> int:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.daily import run_daily
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.markdown import table
    from rayfolio.data.sources import make_source, within
    from rayfolio.data.store import FeatureStore
    from rayfolio.data.validate import validate_before_ray

    config = load_config(args.config)
    store = config.store_dir(args.store)
    FeatureStore(store)  # not a store: one line, before Ray starts
    source = within(make_source(args.source), args.start) if args.source else None
    if source is not None:
        validate_before_ray(source)
    default_audit = config.run_dir / "audit.db"
    audit = args.audit or (str(default_audit) if default_audit.is_file() else None)
    with ray_connection(config.ray, args.address):
        result = run_daily(config, store, source, registry=config.registry_root(args.registry),
                           out=args.out or config.runs_dir / "monitor", audit=audit, submit=args.submit,
                           config_path=args.config)  # fmt: skip
    print(table(result.table(), index=False))
    return result.exit_code
