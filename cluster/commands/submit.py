"""``rayfolio submit -- <command ...>``: any rayfolio command as a Ray job on a cluster."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    submit = commands.add_parser(
        "submit",
        help="run a rayfolio command as a Ray job on a cluster: rayfolio submit [options] -- run --config FILE",
        description="Submits `rayfolio <command>` as a Ray job (this checkout's code and working directory in its "
        "runtime_env), streams its logs and exits with its status (0 succeeded, 1 failed or stopped). Outputs must "
        "go to paths every node can reach (a shared filesystem): the job runs in a copy of the working directory.",
    )
    submit.add_argument("--address", help="the head's dashboard, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS)")
    submit.add_argument("--working-dir", type=Path, default=Path("."),
                        help="the job's working directory, shipped (default: the current one, less runs/)")  # fmt: skip
    submit.add_argument("--with-deps", action="store_true",
                        help="install rayfolio's dependencies in the job's environment (runtime_env pip)")  # fmt: skip
    submit.add_argument("--no-wait", action="store_true", help="return once submitted; do not stream the logs")
    submit.add_argument("job", nargs=argparse.REMAINDER, metavar="-- COMMAND ...", help="the rayfolio command")
    submit.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from rayfolio.cluster.submit import submit

    job = args.job[1:] if args.job[:1] == ["--"] else args.job
    return submit(job, args.address, working_dir=args.working_dir, with_deps=args.with_deps, wait=not args.no_wait)
