"""Connecting to Ray: local dev mode in-process, or a cluster by address."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from rayfolio.cluster.config import RayConfig
from rayfolio.data.verbosity import ray_output_shown

logger = logging.getLogger(__name__)


@contextmanager
def ray_connection(config: RayConfig, address: str | None = None) -> Iterator[None]:
    """Ray for the duration of a command.

    ``address`` (the ``--address`` flag) beats the config, which beats
    ``RAY_ADDRESS``; with none of them, a new local single-node Ray starts in
    this process (dev mode) and stops when the command ends. Local means
    local: ``address="local"`` never joins whatever cluster Ray's
    ``ray_current_cluster`` file names (a live one would be joined silently, a
    crashed one retried for minutes). A Ray that is already up (a job's
    driver, a test session) is used as it is and left running.
    """
    if ray.is_initialized():
        yield
        return
    shown = ray_output_shown()
    target = address or config.address or os.environ.get("RAY_ADDRESS") or None
    options = {"logging_level": logging.INFO if shown else logging.ERROR, "log_to_driver": shown}
    if target:
        context = ray.init(address=target, **options)
    else:
        # The dashboard binds 127.0.0.1 unless configured otherwise.
        context = ray.init(address="local", num_cpus=config.num_cpus, **options)
    _ray_data_progress(shown)
    dashboard = getattr(context, "dashboard_url", None)
    where = f"cluster at {target}" if target else "local dev mode"
    logger.info("ray %s: %s%s", ray.__version__, where, f", dashboard http://{dashboard}" if dashboard else "")
    try:
        yield
    finally:
        ray.shutdown()


def _ray_data_progress(shown: bool) -> None:
    """Ray Data's progress bars and per-dataset log lines on the console, or not.
    Its log file in the session directory keeps everything either way."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = shown
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":  # the handler Ray Data's logging config names so
            handler.setLevel(logging.INFO if shown else logging.ERROR)  # as ray.init's logging_level
