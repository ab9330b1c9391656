"""Connecting to Ray: local dev mode in-process, or a cluster by address."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from rayfolio.cluster.config import RayConfig
from rayfolio.data.verbosity import ray_output_shown

logger = logging.getLogger(__name__)

GCS_PORT_VARIABLE = "RAY_GCS_SERVER_PORT"


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
    # Locally, the dashboard binds 127.0.0.1 unless configured otherwise.
    context = ray.init(address=target, **options) if target else init_local_ray(num_cpus=config.num_cpus, **options)
    _ray_data_progress(shown)
    dashboard = getattr(context, "dashboard_url", None)
    where = f"cluster at {target}" if target else "local dev mode"
    logger.info("ray %s: %s%s", ray.__version__, where, f", dashboard http://{dashboard}" if dashboard else "")
    try:
        yield
    finally:
        ray.shutdown()


def init_local_ray(**options) -> ray.RayContext:
    """``ray.init(address="local", **options)``: a new local Ray that its own workers can name.

    Ray's state API, which Ray Train's placement-group cleaner calls from a worker, finds "the" local
    Ray by scanning for GCS processes; with two local Rays on one machine (two jobs, a job beside a
    test session) it fails, the cleaner dies, and the placement groups of trials that Tune stopped are
    never freed: the next trial waits for CPUs forever. So the GCS gets a port chosen here, and the
    node's processes, which inherit this process's environment when ray.init starts them, get its
    address in ``RAY_ADDRESS`` (``address="local"`` itself ignores the variable); this process's
    environment is restored afterwards."""
    port = _free_port()
    pinned = {GCS_PORT_VARIABLE: str(port), "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}"}
    saved = {name: os.environ.get(name) for name in pinned}
    os.environ.update(pinned)
    params = ray._private.parameter
    default_params = params.RayParams
    # The dashboard agent (what runs submitted jobs: `rayfolio serve`'s /v1/jobs) listens on a fixed port,
    # 52365, that ray.init cannot change; with a second local Ray on the machine the later one's agent
    # fails to bind and every job submission to it is refused ("No available agent"). A free port here.
    agent_port = _free_port()

    class AgentOnFreePort(default_params):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", agent_port)
            super().__init__(*args, **kwargs)

    params.RayParams = AgentOnFreePort
    try:
        return ray.init(address="local", **options)
    finally:
        params.RayParams = default_params
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _ray_data_progress(shown: bool) -> None:
    """Ray Data's progress bars and per-dataset log lines on the console, or not.
    Its log file in the session directory keeps everything either way."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = shown
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":  # the handler Ray Data's logging config names so
            handler.setLevel(logging.INFO if shown else logging.ERROR)  # as ray.init's logging_level
