"""The ``rayfolio`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rayfolio.cluster.config import ConfigError, RunConfig, load_config
from rayfolio.cluster.submit import SubmitError
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.store import FeatureStoreError
from rayfolio.serving.auth import KeyConfigError
from rayfolio.training.registry import RegistryError

EXPECTED_ERRORS = (ConfigError, PanelValidationError, FeatureStoreError, RegistryError, KeyConfigError, SubmitError)


def _horizons(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"horizons are comma-separated trading-day counts, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayfolio",
        description="Explained, risk-checked portfolio recommendations from daily price panels, on Ray.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, help="run config YAML (default: the built-in quickstart)")
        p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local dev mode)")
        return p

    run = common(commands.add_parser("run", help="the main job: every stage end to end, then a report"))
    run.add_argument("--out", type=Path, help="feature store directory (default: runs/<name>/features)")

    def stage_args(p: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
        p.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features from `rayfolio run`)")
        p.add_argument(
            "--registry", type=Path, help="registry (default: the config's, RAYFOLIO_REGISTRY, runs/registry)"
        )
        p.add_argument(
            "--forecasts", type=Path, help="forecasts.parquet for the top-k baseline (default: the run's, if any)"
        )
        p.add_argument("--out", type=Path, help=f"output directory (default: runs/<name>/{out})")
        return p

    stage_args(
        common(commands.add_parser("rl", help="search PPO/SAC agents on Ray Tune, register them, backtest")), "rl"
    )
    stage_args(
        common(
            commands.add_parser("backtest", help="walk-forward backtest of the production agents against the baselines")
        ),
        "backtest",
    )

    serve_cmd = common(commands.add_parser("serve", help="the recommendation service (Ray Serve) on 127.0.0.1:8000"))
    serve_cmd.add_argument("--store", type=Path, help="feature store (default: runs/<name>/features)")
    serve_cmd.add_argument(
        "--registry", type=Path, help="registry (default: the config's, RAYFOLIO_REGISTRY, runs/registry)"
    )
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

    data = commands.add_parser("data", help="feature store commands")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = common(data_commands.add_parser("prepare", help="build a feature store on Ray Data"))
    prepare.add_argument("--source", help="'sp500' (embedded), 'synthetic', or a CSV/Parquet file, directory or URI")
    prepare.add_argument("--out", type=Path, required=True, help="feature store directory to write")
    prepare.add_argument("--horizons", type=_horizons, help="label horizons, e.g. 5,20,60")
    prepare.add_argument("--assets", type=int, help="synthetic: number of assets")
    prepare.add_argument("--days", type=int, help="synthetic: number of business days")
    prepare.add_argument("--seed", type=int, help="synthetic: random seed")
    models = commands.add_parser("models", help="model catalog and registry")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")

    def registry_arg(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--registry", type=Path, help="registry directory (default: RAYFOLIO_REGISTRY, else runs/registry)"
        )
        p.add_argument("--config", type=Path, help="run config whose registry to use")
        return p

    registry_arg(model_commands.add_parser("list", help="model families and registered versions"))
    promote = registry_arg(model_commands.add_parser("promote", help="point a stage at a version"))
    promote.add_argument("name", help="registered model, e.g. lstm-forecaster")
    promote.add_argument("version", help="version, e.g. v0002")
    promote.add_argument("--stage", default="production", choices=["production", "staging"])
    rollback = registry_arg(model_commands.add_parser("rollback", help="point a stage back at its previous version"))
    rollback.add_argument("name")
    rollback.add_argument("--stage", default="production", choices=["production", "staging"])

    show = data_commands.add_parser("show", help="summary and feature statistics of a feature store")
    show.add_argument("store", type=Path, nargs="?", help="store directory (default: the config's run store)")
    show.add_argument("--config", type=Path, help="run config whose store to show (default: the quickstart)")
    return parser


def _with_overrides(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    data = config.data
    synthetic = data.synthetic.model_copy(
        update={
            k: v for k, v in (("n_assets", args.assets), ("n_days", args.days), ("seed", args.seed)) if v is not None
        }
    )
    update = {"synthetic": type(data.synthetic).model_validate(synthetic.model_dump())}
    if args.source is not None:
        update["source"] = args.source
    if args.horizons is not None:
        update["horizons"] = args.horizons
    new_data = type(data).model_validate({**data.model_dump(), **update})
    return config.model_copy(update={"data": new_data})


def _prepare(args: argparse.Namespace) -> None:
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.sources import make_source
    from rayfolio.data.store import prepare_feature_store

    config = _with_overrides(load_config(args.config), args)
    with ray_connection(config.ray, args.address):
        source = make_source(config.data.source, config.data.synthetic.to_config())
        summary = prepare_feature_store(source, args.out, config.data.horizons)
    print("\n".join(summary.lines()))


def _show(args: argparse.Namespace) -> None:
    from rayfolio.cluster.report import table
    from rayfolio.data.store import FeatureStore

    store = FeatureStore(args.store or load_config(args.config).run_dir / "features")
    store.verify()
    print("\n".join(store.summary().lines()))
    print(table(store.coverage()))


def _registry(args: argparse.Namespace):
    from rayfolio.training.registry import ModelRegistry

    if args.registry is not None:
        return ModelRegistry(args.registry)
    configured = load_config(args.config).registry if args.config else None
    return ModelRegistry(configured or ModelRegistry.default_root())


def _models(args: argparse.Namespace) -> None:
    import pandas as pd

    from rayfolio.cluster.report import table
    from rayfolio.training.catalog import CATALOG

    registry = _registry(args)
    if args.models_command == "promote":
        registry.promote(args.name, args.version, args.stage)
        print(f"{args.name}: {args.stage} -> {args.version}")
        return
    if args.models_command == "rollback":
        print(f"{args.name}: {args.stage} -> {registry.rollback(args.name, args.stage)}")
        return
    for spec in CATALOG.values():
        print(f"\n{spec.family}: {spec.summary}")
        print(f"  use cases:      {'; '.join(spec.use_cases)}")
        print(f"  strengths:      {'; '.join(spec.strengths)}")
        print(f"  weaknesses:     {'; '.join(spec.weaknesses)}")
        print(f"  latency:        {spec.latency_class}")
        print(f"  data needs:     {spec.data_needs}")
        print(f"  explainability: {spec.explainability}")
        print(f"  defaults:       {spec.default_hyperparameters()}")
        print(f"  references:     {'; '.join(spec.references)}")
    rows = []
    for name in registry.models():
        stages = {registry.stage_version(name, s): s for s in ("staging", "production")}
        for version in registry.versions(name):
            info = registry.get(name, version)
            rows.append(
                {
                    "model": name,
                    "version": version,
                    "stage": stages.get(version, ""),
                    "validation Rank IC": info.metrics.get("validation_rank_ic_search"),
                    "validation Sharpe": info.metrics.get("validation_sharpe"),
                    "configurations tried": info.metrics.get("configurations_tried"),
                    "deflated Sharpe": info.metrics.get("deflated_sharpe"),
                    "created": info.manifest["created_at"],
                }
            )
    print(f"\nregistry {registry.root}:")
    print(
        table(pd.DataFrame(rows), index=False) if rows else "  (no registered versions yet: `rayfolio run` trains some)"
    )


def _allocation(args: argparse.Namespace) -> None:
    """``rayfolio rl`` and ``rayfolio backtest`` on an existing feature store."""
    from rayfolio.cluster.main_job import COMPARISON, _allocation_section, backtest_section
    from rayfolio.cluster.report import Report, table
    from rayfolio.cluster.runtime import ray_connection
    from rayfolio.data.splits import PurgedDateSplitter
    from rayfolio.data.store import FeatureStore
    from rayfolio.rl.market import MarketData
    from rayfolio.rl.stage import backtest, load_agents, read_forecasts, run_allocation
    from rayfolio.training.panel import Panel
    from rayfolio.training.registry import ModelRegistry

    config = load_config(args.config)
    store = FeatureStore(args.store or config.run_dir / "features")
    store.verify()
    splitter = PurgedDateSplitter(config.splits, purge=max(store.horizons))
    if args.registry is not None:
        registry = ModelRegistry(args.registry)
    else:
        registry = ModelRegistry(config.registry or ModelRegistry.default_root())
    forecasts = args.forecasts or config.run_dir / "forecasts.parquet"
    if args.forecasts is not None and not forecasts.is_file():
        raise ConfigError(f"{forecasts}: no such forecasts file")
    out = (args.out or config.run_dir / args.command).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(f"rayfolio {args.command} '{config.name}'")
    if args.command == "rl":
        with ray_connection(config.ray, args.address):
            stage = run_allocation(
                store, splitter, config.allocation, out, registry, source=config.data.source, forecasts_path=forecasts
            )
        _allocation_section(report, stage, config, out)
        result = stage.backtest
    else:
        panel = Panel.from_store(store)
        frame = read_forecasts(forecasts)
        agents, loaded = load_agents(registry, panel, splitter, config.allocation, frame)
        market = MarketData.from_panel(panel, splitter, config.allocation.env, forecasts=frame)
        result, notes = backtest(market, config.allocation, agents, source=config.data.source, forecasts=frame, out=out)
        backtest_section(report, result, (*loaded, *notes), config, out)
    print(table(result.metrics[COMPARISON], floatfmt=".3f"))
    print(f"report: {report.write(out / 'report.md')}")


def _serve(args: argparse.Namespace) -> None:
    import signal
    import time

    from ray import serve

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
    registry = ModelRegistry(args.registry or config.registry or ModelRegistry.default_root())
    allocator = args.allocator or best_allocator(registry)
    settings = ServeSettings(
        store=(args.store or config.run_dir / "features").resolve(),
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            from rayfolio.cluster.main_job import run_main_job

            run_main_job(load_config(args.config), address=args.address, store_dir=args.out)
        elif args.command == "serve":
            _serve(args)
        elif args.command == "submit":
            from rayfolio.cluster.submit import submit

            job = args.job[1:] if args.job[:1] == ["--"] else args.job
            return submit(job, args.address, working_dir=args.working_dir, with_deps=args.with_deps,
                          wait=not args.no_wait)  # fmt: skip
        elif args.command in ("rl", "backtest"):
            _allocation(args)
        elif args.command == "data" and args.data_command == "prepare":
            _prepare(args)
        elif args.command == "data" and args.data_command == "show":
            _show(args)
        elif args.command == "models":
            _models(args)
    except EXPECTED_ERRORS as err:
        print(f"rayfolio: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
