"""``rayfolio models list|promote|rollback|export``: the model catalog and the registry."""

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
    export = _registry_args(model_commands.add_parser(
        "export",
        help="export a forecaster to ONNX (optionally int8): a new version if the accuracy gate passes",
        description="Exports each seed of an LSTM or Transformer forecaster to ONNX (torch.onnx dynamo) and, with "
        "--quantize int8, quantises its weights to int8 (ONNX Runtime). The gate, on the version's validation "
        "dates: fp32 ONNX within 1e-5 of torch at batches of 1 and 8 dates, median per-date Spearman against "
        "torch >= 0.99, validation Rank IC moved by <= 0.005; latency per batch recorded. Passing registers a "
        "new version (same card and torch weights, the ONNX files, export.json); failing registers nothing "
        "(exit 2). The GAT stays in torch. Serve it with forecaster_runtime: onnx | onnx-int8.",
    ))  # fmt: skip
    export.add_argument("name", help="registered forecaster, e.g. lstm-forecaster")
    export.add_argument("--version", help="version to export (default: the production one)")
    export.add_argument("--runtime", required=True, choices=["onnx"], help="the runtime to export to")
    export.add_argument("--quantize", choices=["int8"], help="also an int8 copy (dynamic quantisation)")
    export.add_argument("--stage", default="auto", choices=["auto", "production", "staging"],
                        help="stage of the new version (auto: staging when a production version exists)")  # fmt: skip
    export.add_argument("--store", type=Path, help="feature store the gate reads (default: the config's run store)")
    export.set_defaults(func=_export)


def _registry(args: argparse.Namespace):
    from rayfolio.cluster.config import load_config
    from rayfolio.training.registry import ModelRegistry

    return ModelRegistry(load_config(args.config).registry_root(args.registry))


def _export(args: argparse.Namespace) -> None:
    import pandas as pd

    from rayfolio.cluster.config import load_config
    from rayfolio.data.markdown import table
    from rayfolio.data.store import FeatureStore
    from rayfolio.training.export import ExportGateError, export_forecaster, refuse_gat
    from rayfolio.training.panel import Panel

    registry = _registry(args)
    source = registry.get(args.name, args.version)
    refuse_gat(source)  # before reading the store: a GAT is refused at once
    panel = Panel.from_store(FeatureStore(load_config(args.config).store_dir(args.store)))
    try:
        exported = export_forecaster(registry, args.name, panel, source.version, args.quantize, args.stage)
    except ExportGateError as err:
        print(table(pd.DataFrame(err.report.rows()), index=False))  # the figures; the error line follows
        raise
    version = exported.version
    print(table(pd.DataFrame(exported.report.rows()), index=False))
    print(f"{args.name}: {version.version} ({registry.stage_of(version) or 'no stage'}) exported from "
          f"{source.version}: runtimes {', '.join(exported.report.runtimes)}; serve it with "
          f"forecaster_runtime: {exported.report.runtimes[-1]}")  # fmt: skip


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
