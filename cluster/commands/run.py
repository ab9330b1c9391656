"""``rayfolio run``: the main job, every stage end to end, then the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address

# training.stage.LastRefitStage, spelled out here so that `--help` imports no training code.
STAGES = ("auto", "staging")


def register(commands) -> None:
    run = config_and_address(commands.add_parser("run", help="the main job: every stage end to end, then a report"))
    store = run.add_mutually_exclusive_group()
    store.add_argument("--out", type=Path, help="feature store directory to build (default: runs/<name>/features)")
    store.add_argument("--store", type=Path,
                       help="train on this existing feature store (e.g. one `rayfolio data append` keeps current) "
                       "instead of building one; its checksums are verified first")  # fmt: skip
    run.add_argument("--stage", choices=STAGES, default="auto",
                     help="where the last refit's forecasters are registered: auto (production if a model has none "
                     "yet, else staging) or staging (a retraining for review: never production)")  # fmt: skip
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.main_job import run_main_job

    config = load_config(args.config)
    report = run_main_job(config, address=args.address, store_dir=args.out, existing_store=args.store,
                          stage=args.stage)  # fmt: skip
    print(f"report: {report}")
