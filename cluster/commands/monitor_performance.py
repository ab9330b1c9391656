"""``rayfolio monitor performance``: how the served recommendations did once their returns realised.

The audit log's recommendations joined with the feature store's labels (serving/live_performance.py):
rolling Rank IC of the served forecasts, hit rate, the served portfolios against 1/N. Writes
``<out>/performance.json`` (its ``level`` is what ``rayfolio monitor check`` reads), prints a table,
and sets the ``rayfolio_live_*`` gauges when connected to Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("performance", help="live Rank IC, hit rate and excess return of served recommendations")
    parser.add_argument("--audit", help="audit log: SQLAlchemy URL or SQLite file (default: runs/<name>/audit.db)")
    parser.add_argument("--store", type=Path, help="feature store with the realised labels (default: "
                        "runs/<name>/features)")  # fmt: skip
    parser.add_argument("--config", type=Path, help="run config (default: the built-in quickstart)")
    parser.add_argument("--window", help="as_of dates to score, START:END (ISO; either side may be left open)")
    parser.add_argument("--out", type=Path, help="where performance.json goes (default: runs/monitor)")
    parser.add_argument("--ic-floor", type=float, default=0.0, help="mean Rank IC below this over --days scored "
                        "dates (at least 20) is critical (default: 0.0)")  # fmt: skip
    parser.add_argument("--days", type=int, default=60, help="the recent window: the last N served dates with "
                        "realised returns (default: 60)")  # fmt: skip
    parser.set_defaults(func=_performance)


def _performance(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.data.markdown import table
    from rayfolio.data.store import FeatureStore
    from rayfolio.serving import live_performance as live

    config = load_config(args.config)
    try:
        # Checked before the store is opened: a bad flag is named first.
        settings = live.PerformanceConfig(ic_floor=args.ic_floor, days=args.days)
        window = live.parse_window(args.window)
        audit = args.audit or str(config.run_dir / "audit.db")
        report = live.live_performance(audit, FeatureStore(config.store_dir(args.store)), window, settings)
    except live.LivePerformanceError as err:
        raise ConfigError(str(err)) from None
    path = report.write(args.out or config.runs_dir / "monitor")
    live.export_gauges(report)
    start, end = (d.isoformat() if d else "-" for d in report.window)
    print(f"live performance of {report.recommendations} recommendations served {start} .. {end} ({report.audit})")
    if report.horizons:
        print(table(report.table()))
    print(f"level: {report.level}")
    for reason in report.reasons:
        print(f"  {reason}")
    print(f"written: {path}")
