"""``rayfolio serve``: the recommendation service (Ray Serve) on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rayfolio.cluster.commands.common import config_and_address, registry_option


def register(commands) -> None:
    serve_cmd = config_and_address(commands.add_parser("serve", help="the recommendation service (Ray Serve) on "
                                                                     "127.0.0.1:8000"))  # fmt: skip
    serve_cmd.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features)")
    registry_option(serve_cmd)
    serve_cmd.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--audit", help="audit log SQLAlchemy URL (default: SQLite file runs/<name>/audit.db)")
    serve_cmd.add_argument("--allocator", help="registered allocator (default: the production one with the best "
                           "validation Sharpe)")  # fmt: skip
    serve_cmd.add_argument("--haproxy", action="store_true",
                           help="HAProxy ingress instead of Serve's Python proxy (~3.5x the throughput here); "
                           "local dev mode only; it binds every interface, so use it behind a firewall")  # fmt: skip
    serve_cmd.add_argument("--insecure-dev", action="store_true",
                           help="no API keys: every caller is admin (local development only)")  # fmt: skip
    serve_cmd.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> None:
    import signal
    import time

    from ray import serve

    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.rl.stage import best_allocator
    from rayfolio.serving.app import ServeSettings, build_app
    from rayfolio.serving.audit import sqlite_url
    from rayfolio.serving.auth import load_api_keys
    from rayfolio.training.registry import ModelRegistry

    config = load_config(args.config)
    keys = load_api_keys()
    if not keys and not args.insecure_dev:
        raise ConfigError(
            "no API keys: set RAYFOLIO_API_KEYS (comma-separated key or key:admin) or RAYFOLIO_API_KEYS_FILE, "
            "or pass --insecure-dev for local development"
        )
    registry = ModelRegistry(config.registry_root(args.registry))
    allocator = args.allocator or best_allocator(registry)
    settings = ServeSettings(
        store=config.store_dir(args.store),
        registry=registry.root.resolve(),
        splits=config.splits,
        audit_url=args.audit or sqlite_url(config.run_dir / "audit.db"),
        allocator=allocator,
        insecure_dev=args.insecure_dev and not keys,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops it as cleanly as Ctrl-C
    if args.haproxy:  # read when this process starts Ray; a cluster sets it when its nodes start
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        print("HAProxy ingress: Serve's HTTP ports listen on every interface, not only 127.0.0.1", flush=True)
    with ray_connection(config.ray, args.address):
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(settings), name="rayfolio", route_prefix="/")
        url = f"http://{args.host}:{args.port}"
        auth = "" if settings.insecure_dev else ' -H "Authorization: Bearer $RAYFOLIO_KEY"'
        print(f"\nrayfolio is serving at {url} (OpenAPI: {url}/docs); Ctrl-C stops it. Try:\n")
        print(f"  curl -s {url}/v1/recommendations{auth} -H 'Content-Type: application/json' \\\n"
              "    -d '{\"portfolio\": {}, \"risk_profile\": {\"risk_tolerance\": 0.5, \"horizon_days\": 20}}'\n",
              flush=True)  # fmt: skip
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()
