"""``rayfolio serve``: the recommendation service (Ray Serve) on 127.0.0.1.

It reads the same Serve config YAML as ``serve deploy`` (cluster/serve_config.yaml, shipped
with rayfolio.cluster, unless ``--serve-config``): replicas, admission and rate limits, house
limits, placement, host and port. Where the models are (store, registry, audit log, split
dates, allocator) comes from the run (``--config``, else the built-in quickstart; the registry
also from RAYFOLIO_REGISTRY), or from the serve config's own args when ``--serve-config`` is
given without ``--config``. ``--store``, ``--registry``, ``--audit``, ``--allocator``,
``--host`` and ``--port`` override all of these.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, registry_option

logger = logging.getLogger(__name__)


def default_serve_config() -> Path:
    """cluster/serve_config.yaml: package data of rayfolio.cluster, found after any install."""
    return Path(__file__).resolve().parents[1] / "serve_config.yaml"


def register(commands) -> None:
    serve_cmd = config_and_address(commands.add_parser("serve", help="the recommendation service (Ray Serve) on "
                                                                     "127.0.0.1:8000"))  # fmt: skip
    serve_cmd.add_argument("--serve-config", type=Path, help="Serve config YAML, the one `serve deploy` takes; "
                           "edits to it are deployed while it serves (an experiment: live) "
                           "(default: cluster/serve_config.yaml)")  # fmt: skip
    serve_cmd.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features)")
    registry_option(serve_cmd)
    serve_cmd.add_argument("--host", help="bind address (default: the serve config's, 127.0.0.1: this machine only)")
    serve_cmd.add_argument("--port", type=int, help="port (default: the serve config's, 8000)")
    serve_cmd.add_argument("--audit", help="audit log SQLAlchemy URL (default: SQLite file runs/<name>/audit.db)")
    serve_cmd.add_argument("--allocator", help="registered allocator (default: the production one with the best "
                           "validation Sharpe)")  # fmt: skip
    serve_cmd.add_argument("--haproxy", action="store_true",
                           help="HAProxy ingress instead of Serve's Python proxy (~3.5x the throughput here); "
                           "local dev mode only; it binds every interface, so use it behind a firewall")  # fmt: skip
    serve_cmd.add_argument("--insecure-dev", action="store_true",
                           help="no API keys: every caller is admin (local development only)")  # fmt: skip
    serve_cmd.set_defaults(func=_serve)


def serve_settings(args: argparse.Namespace):
    """The settings ``rayfolio serve`` runs with: the serve config's, the run's locations and
    split dates, then the flags. Returns (settings, host, port)."""
    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.rl.load import best_allocator
    from rayfolio.serving.audit import sqlite_url
    from rayfolio.serving.settings import SettingsError, read_serve_config, settings_from_args
    from rayfolio.training.registry import ModelRegistry

    config = load_config(args.config)
    try:
        serve_config = read_serve_config(args.serve_config or default_serve_config())
        if args.serve_config is not None and args.config is None:  # a deployment's own file: its locations
            run = {"store": args.store, "registry": args.registry, "audit_url": args.audit, "allocator": args.allocator}
        else:  # the run's artifacts, served the way the serve config says
            registry = ModelRegistry(config.registry_root(args.registry))
            run = {"store": config.store_dir(args.store), "registry": registry.root.resolve(), "splits": config.splits,
                   "audit_url": args.audit or sqlite_url(config.run_dir / "audit.db"),
                   "allocator": args.allocator or best_allocator(registry)}  # fmt: skip
        settings = settings_from_args(serve_config.settings, **run, insecure_dev=bool(args.insecure_dev))
    except SettingsError as err:
        raise ConfigError(str(err)) from None
    return settings, args.host or serve_config.host, args.port or serve_config.port


def _serve(args: argparse.Namespace) -> None:
    import signal

    from ray import serve

    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.serving.auth import load_api_keys
    from rayfolio.serving.builder import build_app

    keys = load_api_keys()
    if not keys and not args.insecure_dev:
        raise ConfigError(
            "no API keys: set RAYFOLIO_API_KEYS (comma-separated key or key:admin) or RAYFOLIO_API_KEYS_FILE, "
            "or pass --insecure-dev for local development"
        )
    settings, host, port = serve_settings(args)
    settings = settings.model_copy(update={"insecure_dev": args.insecure_dev and not keys})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops it as cleanly as Ctrl-C
    if args.haproxy:  # read when this process starts Ray; a cluster sets it when its nodes start
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        logger.warning("HAProxy ingress: Serve's HTTP ports listen on every interface, not only 127.0.0.1")
    with ray_connection(load_config(args.config).ray, args.address):
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(settings), name="rayfolio", route_prefix="/")
        url = f"http://{host}:{port}"
        auth = "" if settings.insecure_dev else ' -H "Authorization: Bearer $RAYFOLIO_KEY"'
        logger.info(
            "rayfolio is serving at %s (capacity %d requests at once); Ctrl-C stops it.\n"
            "  console:  %s/ui/  (sign in with an API key)\n  API docs: %s/docs\nTry:\n\n"
            "  curl -s %s/v1/recommendations%s -H 'Content-Type: application/json' \\\n"
            "    -d '{\"portfolio\": {}, \"risk_profile\": {\"risk_tolerance\": 0.5, \"horizon_days\": 20}}'\n",
            url, settings.capacity, url, url, url, auth,
        )  # fmt: skip
        try:
            follow_serve_config(args, settings)
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()


def follow_serve_config(args: argparse.Namespace, settings, poll_s: float = 2.0) -> None:
    """Deploy again whenever the serve config file changes, as `serve deploy` would: a change of the
    Ingress's user_config only (the experiment) reconfigures the running replicas in place; other
    changes roll them. A file that no longer validates is refused with one line and the running
    app keeps serving."""
    import time

    from ray import serve

    from rayfolio.cluster.config import ConfigError
    from rayfolio.serving.builder import build_app

    path = args.serve_config or default_serve_config()

    def stamp() -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    seen = stamp()
    while True:
        time.sleep(poll_s)
        now = stamp()
        if now is None or now == seen:
            continue
        seen = now
        try:
            changed, _, _ = serve_settings(args)
        except ConfigError as err:
            logger.error("%s changed but cannot be used, still serving the last one: %s", path, err)
            continue
        changed = changed.model_copy(update={"insecure_dev": settings.insecure_dev})
        if changed != settings:
            logger.info("%s changed: deploying it", path)
            serve.run(build_app(changed), name="rayfolio", route_prefix="/")
            settings = changed
