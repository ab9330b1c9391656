"""``rayfolio run``: the main job, every stage end to end, then the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address


def register(commands) -> None:
    run = config_and_address(commands.add_parser("run", help="the main job: every stage end to end, then a report"))
    run.add_argument("--out", type=Path, help="feature store directory (default: runs/<name>/features)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import load_config
    from rayfolio.cluster.main_job import run_main_job

    print(f"report: {run_main_job(load_config(args.config), address=args.address, store_dir=args.out)}")
