"""Connecting to Ray: local dev mode in-process, or a cluster by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from rayfolio.cluster.config import RayConfig


@contextmanager
def ray_connection(config: RayConfig, address: str | None = None, *, verbose: bool = True) -> Iterator[None]:
    """Ray for the duration of a command.

    ``address`` (the ``--address`` flag) beats the config, which beats
    ``RAY_ADDRESS``; with none of them, a local single-node Ray starts in this
    process (dev mode) and stops when the command ends. A Ray that is already
    up (a job's driver, a test session) is used as it is and left running.
    """
    if ray.is_initialized():
        yield
        return
    target = address or config.address or os.environ.get("RAY_ADDRESS")
    if target:
        context = ray.init(address=target, logging_level=logging.WARNING)
    else:
        # The dashboard binds 127.0.0.1 unless configured otherwise.
        context = ray.init(num_cpus=config.num_cpus, logging_level=logging.WARNING)
    if verbose:
        where = f"cluster at {target}" if target else "local dev mode"
        dashboard = getattr(context, "dashboard_url", None)
        print(f"ray {ray.__version__}: {where}" + (f", dashboard http://{dashboard}" if dashboard else ""), flush=True)
    try:
        yield
    finally:
        ray.shutdown()
