"""``rayfolio experiment status|promote|stop``: an A/B experiment's arms, its comparison and its one
conclusion, from the audit log and the feature store's realised returns.

The figures, the always-valid p-value and the decision rule are serving/experiment_status.py's;
``promote`` goes through only when that rule decides promote, and points the model's production
stage at the candidate; ``stop`` records the end (every client then gets the control) and moves
nothing. Either is recorded once in the audit log; the serving replicas read it there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rayfolio.data.conventions import DEFAULT_COST_BPS


def register(commands) -> None:
    experiment = commands.add_parser("experiment", help="A/B experiments of model versions: status, promote, stop")
    sub = experiment.add_subparsers(dest="experiment_command", required=True, metavar="EXPERIMENT_COMMAND")
    status = _common(sub.add_parser("status", help="per arm requests, latency and errors; the realised comparison "
                                    "and the decision (continue, promote, stop)"))  # fmt: skip
    status.add_argument("--format", choices=["text", "json"], default="text", help="text (default) or the JSON "
                        "the HTTP route returns")  # fmt: skip
    promote = _common(sub.add_parser("promote", help="point the model's production stage at the candidate; refused "
                                     "unless the status decides promote"))  # fmt: skip
    promote.add_argument("--registry", type=Path, help="registry (default: the config's, RAYFOLIO_REGISTRY, "
                         "runs/registry)")  # fmt: skip
    _common(sub.add_parser("stop", help="end the experiment (every client gets the control); no registry change"))


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("name", help="the experiment (its name in the serve config)")
    parser.add_argument("--audit", help="audit log: SQLAlchemy URL or SQLite file (default: runs/<name>/audit.db)")
    parser.add_argument("--store", type=Path, help="feature store with the realised prices (default: "
                        "runs/<name>/features)")  # fmt: skip
    parser.add_argument("--config", type=Path, help="run config (default: the built-in quickstart)")
    parser.add_argument("--cost-bps", type=float, default=DEFAULT_COST_BPS, help="cost per unit of turnover, "
                        f"in basis points (default: {DEFAULT_COST_BPS:g})")  # fmt: skip
    parser.set_defaults(func=_experiment)
    return parser


def _experiment(args: argparse.Namespace) -> None:
    from rayfolio.cluster.config import ConfigError, load_config
    from rayfolio.data.store import FeatureStore
    from rayfolio.serving import experiment_status as ex

    config = load_config(args.config)
    audit = _audit_log(args.audit or str(config.run_dir / "audit.db"))
    try:
        status = ex.experiment_status(audit, args.name, FeatureStore(config.store_dir(args.store)),
                                      cost_bps=args.cost_bps)  # fmt: skip
        if args.experiment_command == "status":
            print(status.model_dump_json(indent=2) if args.format == "json" else _text(status))
            return
        registry = None
        if args.experiment_command == "promote":
            from rayfolio.training.registry import ModelRegistry

            registry = ModelRegistry(config.registry_root(args.registry))
            before = registry.stage_version(status.model)
        record = ex.conclude_experiment(audit, registry, args.name, args.experiment_command, _who(), status)
    except ex.ExperimentError as err:
        raise ConfigError(str(err)) from None
    done = "promoted" if record.payload["action"] == "promote" else "stopped"
    print(f"experiment {args.name}: {done} by {record.payload['by']} (audit record {record.seq})")
    if registry is not None:
        print(f"{status.model} production: {before or '(none)'} -> {status.candidate}")
    else:
        print(f"no registry change: replicas serve every client the control ({status.model} {status.control})")


def _audit_log(text: str):
    """The audit log at ``text`` (a SQLAlchemy URL or a SQLite file); a missing SQLite file is an
    error, not a new empty log."""
    from rayfolio.cluster.config import ConfigError
    from rayfolio.serving.audit import AuditLogUnreadable, open_existing

    try:
        return open_existing(text)
    except AuditLogUnreadable as err:
        raise ConfigError(str(err)) from None


def _who() -> str:
    """Who concluded, for the audit record: the operating-system user at the command line (the
    HTTP route records the admin key's id instead)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "cli"


def _text(status) -> str:
    import pandas as pd

    from rayfolio.data.markdown import table

    arms = pd.DataFrame.from_dict(
        {arm: {"version": s.version, "assigned": s.requests, "served": s.served, "errors": s.errors,
               "error rate": f"{s.error_rate:.2%}", "p50 ms": s.latency_p50_ms, "p99 ms": s.latency_p99_ms}
         for arm, s in status.arms.items()}, orient="index")  # fmt: skip
    c = status.comparison
    lines = [f"experiment {status.name}: {status.model} {status.control} (control) vs {status.candidate} "
             f"(candidate); {status.records} recommendations, as_of {status.first_as_of} .. {status.last_as_of}"
             + (f" ({status.other_versions} of other versions left out)" if status.other_versions else ""),
             "", table(arms, floatfmt=".1f"), "",
             f"candidate - control, next-day return net of {c.cost_bps:g} bp costs, mean per as_of date:",
             f"  {c.dates} realised dates ({c.scored} requests scored, {c.pending} pending, {c.failed} with a "
             "failed arm)"]  # fmt: skip
    if c.mean_difference is not None:
        t = "n/a (fewer than 3 dates)" if c.hac_t is None else f"{c.hac_t:.2f} (lag {c.hac_lag})"
        lines.append(f"  mean difference {c.mean_difference:+.6f} a day ({c.mean_difference * 1e4:+.2f} bp), "
                     f"HAC t {t}")  # fmt: skip
    lines.append(f"  always-valid p-value (mSPRT, tau = {c.tau_ratio:g} x the differences' std): {c.p_value:.4g}")
    lines += [f"decision: {status.decision}", *(f"  {reason}" for reason in status.reasons)]
    return "\n".join(lines)
