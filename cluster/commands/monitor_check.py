"""``rayfolio monitor check``: the day's monitor levels, and the retraining a critical one calls for.

Reads ``drift.json`` and ``performance.json`` (what ``monitor drift`` and ``monitor performance`` write:
a top-level ``level``, ``info`` / ``warning`` / ``critical``, with one-line ``reasons``), prints each
level and its reasons, and exits 3 when any level is critical, else 0, so that a scheduler or a shell
script can act on it. With ``--submit``, a critical level also submits the retraining job,
``rayfolio run --store DIR --stage staging``, through the job submission of ``rayfolio submit``
(cluster/submit.py). Its forecasters are registered to staging only, never production: a person
promotes them (``rayfolio models promote``) after reading the run's report.

The retraining job ships no working directory: it runs in the cluster's own (where ``ray start``
ran: /home/ray on KubeRay), as a RayJob's entrypoint does, so the config's relative ``runs_dir`` and
registry are the cluster's, the ones the service reads. The store and config paths are made absolute
here and must be the same files on the cluster (a shared filesystem, or the same machine).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("info", "warning", "critical")
EXIT_CRITICAL = 3
# Ray's own variable for the job server's address (`ray job submit` reads it before RAY_ADDRESS). Inside
# a Ray job RAY_ADDRESS is the GCS address, which takes no job submissions: a scheduled job that
# retrains sets this one to the head's dashboard instead (cluster/k8s/daily-cronjob.yaml).
JOB_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"


class MonitorCheckError(ValueError):
    """A monitor file that is missing or does not hold a level; one line naming the file."""


@dataclass(frozen=True)
class MonitorLevel:
    """One monitor's verdict, as its JSON file states it."""

    monitor: str  # "drift" or "performance"
    path: Path
    level: str  # one of LEVELS
    reasons: tuple[str, ...]  # one line each; empty when info
    window: tuple[str | None, str | None] | None = None  # ISO dates looked at (either side may be open)

    @property
    def critical(self) -> bool:
        return self.level == "critical"

    def lines(self) -> list[str]:
        window = f", window {self.window[0] or '-'} .. {self.window[1] or '-'}" if self.window else ""
        return [f"{self.monitor}: {self.level} ({self.path}{window})", *(f"  {r}" for r in self.reasons)]


def read_level(monitor: str, path: Path) -> MonitorLevel:
    """The level and reasons in ``path``; refused in one line when it is missing or malformed."""
    if not path.is_file():
        raise MonitorCheckError(f"{path}: no such file (write it with `rayfolio monitor {monitor}`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MonitorCheckError(f"{path}: not a readable JSON file ({err})") from None
    level = doc.get("level") if isinstance(doc, dict) else None
    if level not in LEVELS:
        raise MonitorCheckError(f"{path}: 'level' must be one of {', '.join(LEVELS)}, got {level!r}")
    reasons = doc.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise MonitorCheckError(f"{path}: 'reasons' must be a list of strings")
    window = doc.get("window")
    return MonitorLevel(monitor, path, level, tuple(reasons), tuple(window) if isinstance(window, list) else None)


def retraining_command(store: Path, config: Path | None = None) -> list[str]:
    """``rayfolio run`` on the existing ``store``, its forecasters to staging only (absolute paths:
    the job runs in the cluster's working directory, not this one)."""
    command = ["run", "--store", str(store.resolve()), "--stage", "staging"]
    return command + (["--config", str(config.resolve())] if config is not None else [])


def submit_retraining(store: Path, config: Path | None = None, address: str | None = None) -> str:
    """Submit the retraining job without waiting for it; returns its job id. ``address``: the job
    server (the head's dashboard), else ``RAY_API_SERVER_ADDRESS``, else what ``rayfolio submit``
    falls back to (``RAY_ADDRESS``). Cannot submit: ``SubmitError``, one line."""
    from rayfolio.cluster.submit import submit

    printed = io.StringIO()  # submit() prints the id as its result when it does not wait
    submit(retraining_command(store, config), address or os.environ.get(JOB_SERVER_VARIABLE), wait=False,
           stream=printed)  # fmt: skip
    return printed.getvalue().strip()


def check(levels: Sequence[MonitorLevel]) -> int:
    """The exit status the levels call for: 3 when any is critical, else 0."""
    return EXIT_CRITICAL if any(level.critical for level in levels) else 0


def register(sub) -> None:
    parser = sub.add_parser(
        "check",
        help="read the drift and performance levels; exit 3 on a critical one (--submit: start a staging retraining)",
        description="Prints the levels of drift.json and performance.json with their reasons and exits 3 when any "
        "is critical, else 0. With --submit, a critical level submits `rayfolio run --store DIR --stage staging` as a "
        "Ray job (as `rayfolio submit` does) and prints its id: the retrained forecasters go to staging, never "
        "production.",
    )
    parser.add_argument("--out", type=Path, help="where the monitor files are (default: runs/monitor)")
    parser.add_argument("--drift", type=Path, help="the drift file (default: <out>/drift.json)")
    parser.add_argument("--performance", type=Path, help="the live-performance file (default: <out>/performance.json)")
    parser.add_argument("--submit", action="store_true", help="on a critical level, submit the staging retraining")
    parser.add_argument("--config", type=Path, help="run config, also the retraining's (default: quickstart)")
    parser.add_argument("--store", type=Path, help="the feature store to retrain on (default: runs/<name>/features)")
    parser.add_argument("--address", help=f"the job server for --submit, the head's dashboard, e.g. "
                        f"http://127.0.0.1:8265 (default: {JOB_SERVER_VARIABLE}, else RAY_ADDRESS)")  # fmt: skip
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from rayfolio.cluster.config import ConfigError, load_config

    config = load_config(args.config)
    out = args.out or config.runs_dir / "monitor"
    try:
        levels = [read_level("drift", args.drift or out / "drift.json"),
                  read_level("performance", args.performance or out / "performance.json")]  # fmt: skip
    except MonitorCheckError as err:
        raise ConfigError(str(err)) from None  # the CLI's one-line error, exit 2
    for level in levels:
        print("\n".join(level.lines()))
    code = check(levels)
    if code == EXIT_CRITICAL:
        if args.submit:
            store = config.store_dir(args.store)
            job = submit_retraining(store, args.config, args.address)
            print(f"retraining submitted: {job} (rayfolio run --store {store} --stage staging; models to staging)")
        else:
            print("critical: `rayfolio monitor check --submit` starts a retraining (models to staging)")
    return code
