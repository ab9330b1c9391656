"""``rayfolio monitor drift``: feature and prediction drift of a window against the training window.
Exits 0 whatever the level (``rayfolio monitor check`` decides about alarms)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser("drift", help="feature and prediction drift (PSI, KS) of a window against training")
    parser.add_argument("--store", type=Path, required=True, help="feature store directory")
    parser.add_argument("--window", required=True, metavar="START:END", help="ISO dates, inclusive")
    reference = ("registry whose production forecasters set the reference (their training window) and whose "
                 "forecasts are measured (default: the config's train split, no forecasts)")  # fmt: skip
    parser.add_argument("--registry", type=Path, help=reference)
    parser.add_argument("--config", type=Path, help="run config whose splits apply without --registry")
    parser.add_argument("--audit", metavar="URL", help="audit log (SQLAlchemy URL or SQLite file) of served weights")
    parser.add_argument("--out", type=Path, default=Path("runs/monitor"), help="writes drift.json, drift.md, plots/")
    parser.add_argument("--psi-warning", type=float, default=0.1, help="lowest warning PSI (default 0.1)")
    parser.add_argument("--psi-critical", type=float, default=0.25, help="lowest critical PSI (default 0.25)")
    parser.set_defaults(func=_drift)


def _drift(args: argparse.Namespace) -> int:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.drift import drift_config, export_gauges, measure_drift, parse_window, write_drift
    from rayfolio.data.drift_report import drift_table
    from rayfolio.data.markdown import table
    from rayfolio.data.store import FeatureStore

    window = parse_window(args.window)
    settings = drift_config(args.psi_warning, args.psi_critical)
    config = load_config(args.config)
    registry = None
    if args.registry is not None:
        from rayfolio.training.registry import ModelRegistry

        registry = ModelRegistry(args.registry)
    result = measure_drift(FeatureStore(args.store), window, settings, splits=config.splits, registry=registry,
                           audit_url=args.audit)  # fmt: skip
    files = write_drift(result, args.out)
    exported = export_gauges(result)
    print(table(drift_table(result), index=False))
    print(f"\ndrift {result.window[0]} .. {result.window[1]}: {result.level}")
    for line in [*result.reasons, *result.notes]:
        print(f"  {line}")
    print(f"wrote {files.json}, {files.markdown}" + (" and set the drift gauges" if exported else ""))
    return 0
