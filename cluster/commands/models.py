"""``rayfolio models list|promote|rollback``: the model catalog and the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def _registry_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--registry", type=Path, help="registry directory (default: the config's, RAYFOLIO_REGISTRY, runs/registry)"
    )
    parser.add_argument("--config", type=Path, help="run config whose registry to use")
    parser.set_defaults(func=_models)
    return parser


def register(commands) -> None:
    models = commands.add_parser("models", help="model catalog and registry")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    _registry_args(model_commands.add_parser("list", help="model families and registered versions"))
    promote = _registry_args(model_commands.add_parser("promote", help="point a stage at a version"))
    promote.add_argument("name", help="registered model, e.g. lstm-forecaster")
    promote.add_argument("version", help="version, e.g. v0002")
    promote.add_argument("--stage", default="production", choices=["production", "staging"])
    rollback = _registry_args(model_commands.add_parser("rollback", help="point a stage back at its previous version"))
    rollback.add_argument("name")
    rollback.add_argument("--stage", default="production", choices=["production", "staging"])


def _registry(args: argparse.Namespace):
    from rayfolio.cluster.config import load_config
    from rayfolio.training.registry import ModelRegistry

    return ModelRegistry(load_config(args.config).registry_root(args.registry))


def _models(args: argparse.Namespace) -> None:
    import pandas as pd

    from rayfolio.data.markdown import table
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
