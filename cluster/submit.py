"""``rayfolio submit -- <command ...>``: any rayfolio command as a Ray job.

The job runs ``python -m rayfolio.cluster.cli <command ...>`` on the cluster
with a runtime environment that carries this checkout:

- ``py_modules``: the rayfolio package itself (its six sub-packages copied
  into a staging directory named ``rayfolio``), so the job runs this code
  whether or not the cluster's image has rayfolio installed;
- ``working_dir``: the project directory (configs, local input files), without
  ``runs/``, virtual environments, git and caches. The job's working directory
  is a copy, so outputs must go to storage every node reaches: an absolute
  path on a shared filesystem (``runs_dir`` in the config, ``--out``, and
  ``RAYFOLIO_REGISTRY``), never a relative one;
- ``pip`` (``--with-deps``): the project's third-party dependencies, for a
  cluster whose image lacks them; by default the image is expected to have them.

Then it streams the job's logs and exits with its status: 0 when it
succeeded, 1 when it failed or was stopped.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

EXCLUDES = ["runs/", ".venv/", "venv/", ".git/", "**/__pycache__/", ".pytest_cache/", ".ruff_cache/", "*.egg-info/"]
# Forwarded to the job when set here: where it reads and writes, and the keys it may need.
FORWARDED_ENV = ("RAYFOLIO_REGISTRY", "RAYFOLIO_AUDIT_KEY")


class SubmitError(RuntimeError):
    """A job that cannot be submitted: no address, cluster unreachable, bad arguments."""


def dashboard_address(address: str | None) -> str:
    """The job server's HTTP address from ``--address`` or ``RAY_ADDRESS``."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SubmitError(
            "no cluster address: pass --address http://HEAD:8265 (the head's dashboard) or set RAY_ADDRESS; "
            "`ray start --head` prints it"
        )
    if address.startswith("ray://"):
        raise SubmitError(f"{address}: jobs go to the head's dashboard address (http://HEAD:8265), not ray://")
    return address if "://" in address else f"http://{address}"


def installed_subpackages() -> dict[str, Path]:
    """Every ``rayfolio.<name>`` this interpreter imports, and its folder: the folders
    beside ``rayfolio.cluster`` that import as rayfolio's (found, never listed by hand)."""
    here = Path(importlib.import_module("rayfolio.cluster").__file__).parent
    found = {}
    for folder in sorted(p for p in here.parent.iterdir() if (p / "__init__.py").is_file()):
        spec = importlib.util.find_spec(f"rayfolio.{folder.name}")
        if spec is not None and spec.origin and Path(spec.origin).parent.resolve() == folder.resolve():
            found[folder.name] = folder
    return found


def stage_package(staging: Path) -> Path:
    """A copy of the installed rayfolio sources as ``staging/rayfolio`` (for ``py_modules``)."""
    root = staging / "rayfolio"
    for name, source in installed_subpackages().items():
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def project_dependencies() -> list[str]:
    """rayfolio's own requirements (no extras), as its installed metadata lists them."""
    requires = importlib.metadata.requires("rayfolio") or []
    return [r.split(";")[0].strip() for r in requires if "extra ==" not in r]


def runtime_env(staging: Path, working_dir: Path | None, with_deps: bool, env: dict[str, str]) -> dict:
    out: dict = {"py_modules": [str(stage_package(staging))], "env_vars": env}
    if working_dir is not None:
        out |= {"working_dir": str(working_dir), "excludes": EXCLUDES}
    if with_deps:
        out["pip"] = project_dependencies()
    return out


def submit(
    command: Sequence[str],
    address: str | None = None,
    *,
    working_dir: Path | None = None,
    with_deps: bool = False,
    wait: bool = True,
    env: dict[str, str] | None = None,
    stream: TextIO = sys.stdout,
) -> int:
    """Submit ``rayfolio <command>`` as a job; with ``wait``, stream its logs and its
    final status to ``stream`` (the command's output) and return 0 if it succeeded,
    else 1 (without ``wait``: 0 once submitted, its id logged)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    if not command:
        raise SubmitError("nothing to submit: give a rayfolio command after `--`, e.g. rayfolio submit -- run")
    if command[0] == "submit":
        raise SubmitError("a job cannot submit another job")
    url = dashboard_address(address)
    if working_dir is not None and not working_dir.is_dir():
        raise SubmitError(f"--working-dir {working_dir}: no such directory")
    forwarded = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    try:
        client = JobSubmissionClient(url)
    except Exception as err:  # connection refused, bad token, not a Ray dashboard
        raise SubmitError(f"cannot reach the Ray job server at {url}: {err}") from None
    job_id = f"rayfolio-{command[0]}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="rayfolio-submit-") as staging:
        client.submit_job(
            entrypoint=f"python -m rayfolio.cluster.cli {shlex.join(command)}",
            submission_id=job_id,
            runtime_env=runtime_env(Path(staging), working_dir, with_deps, forwarded | (env or {})),
            metadata={"rayfolio_command": shlex.join(command)},
        )
    logger.info("submitted %s to %s (dashboard: %s/#/jobs/%s)", job_id, url, url, job_id)
    if not wait:
        print(job_id, file=stream, flush=True)  # the result: what `ray job status|logs|stop` take
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            stream.write(lines)
            stream.flush()

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can end a moment before the status does
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    info = client.get_job_info(job_id)
    # The message repeats the log's tail, already streamed: its first line says why.
    detail = f": {info.message.splitlines()[0]}" if status != JobStatus.SUCCEEDED and info.message else ""
    print(f"job {job_id} {status.value}{detail}", file=stream, flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
