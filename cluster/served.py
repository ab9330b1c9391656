"""What the main job and ``rayfolio backtest`` measure as the served path: the forecaster
ensemble (calibrated on validation) and the recommendation pipeline the service builds, under
the house limits of the serve config, replayed as one strategy per risk profile."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rayfolio.cluster.config import ConfigError, RunConfig
from rayfolio.data.markdown import Report, table
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.rl.stage import ServedFactory
from rayfolio.serving.replay import replay_pipeline, served_strategies
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.settings import SettingsError, read_serve_config
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters, split_indices
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry
from rayfolio.training.walk_forward_ensemble import WalkForwardEnsemble


def serve_config_path(config: RunConfig) -> Path:
    from rayfolio.cluster.commands.serve import default_serve_config

    spec = config.allocation.backtest.serve_config
    return Path(spec) if spec else default_serve_config()


def house_limits(config: RunConfig) -> HouseLimits:
    """The house limits the service applies: the serve config's risk-filter ``user_config``."""
    path = serve_config_path(config)
    try:
        limits = read_serve_config(path).settings.get("house_limits", {})
        return HouseLimits.model_validate(limits)
    except SettingsError as err:
        raise ConfigError(str(err)) from None
    except ValueError as err:  # pydantic's ValidationError
        raise ConfigError(f"{path}: house limits (user_config): {err}".replace("\n", " ")) from None


def production_ensemble(registry: ModelRegistry, panel: Panel) -> WalkForwardEnsemble:
    """The production forecasters with the walk-forward that produced them: each earlier refit's
    versions forecast their own segment (``walk_forward_history`` in the versions' metrics), each
    ensemble calibrated on its own validation window: what the main job measured."""
    production = registry.production("forecaster")
    by_refit: dict[int, dict[str, str]] = {}
    for version in production:
        for earlier in version.metrics.get("walk_forward_history", []):
            by_refit.setdefault(earlier["refit"], {})[version.name] = earlier["version"]
    refits = [by_refit[k] for k in sorted(by_refit) if len(by_refit[k]) == len(production)]
    refits.append({v.name: v.version for v in production})
    calendars = [registry.get(*next(iter(v.items()))).card.calendar for v in refits]
    return walk_forward_ensemble(registry, panel, [(c.splits, v) for c, v in zip(calendars, refits, strict=True)],
                                 calendars[-1].purge)  # fmt: skip


def walk_forward_ensemble(
    registry: ModelRegistry, panel: Panel, refits: list[tuple[SplitConfig, dict[str, str]]], purge: int
) -> WalkForwardEnsemble:
    """The walk-forward's ensembles, one per refit ((its splits, {name: version})), each calibrated on
    its own validation window and forecasting from its segment's first date: at every date, the
    forecast the service would have made with the models it had then."""
    segments = []
    for splits, versions in refits:
        splitter = PurgedDateSplitter(splits, purge=purge)
        ensemble = ForecastEnsemble(load_forecasters(registry, panel, versions=versions), panel,
                                    split_indices(panel, splitter, "validation"))  # fmt: skip
        segments.append((int(split_indices(panel, splitter, "test")[0]), ensemble))
    return WalkForwardEnsemble(segments)


def served_factory(
    config: RunConfig,
    registry: ModelRegistry,
    panel: Panel,
    ensemble: ForecastEnsemble | WalkForwardEnsemble,
    out: Path,
) -> ServedFactory:
    """Builds, for the chosen (allocator, version), one served-path strategy per profile of the config."""
    limits = house_limits(config)
    # This run's backtest replays into a fresh log (a rerun replaces the backtest, and its log with it).
    for stale in out.glob("served_audit.db*"):
        stale.unlink()

    def build(allocator: str, version: str):
        pipeline = replay_pipeline(registry, panel, ensemble, allocator, limits, out / "served_audit.db",
                                   splits=config.splits, allocator_version=version)  # fmt: skip
        profiles = config.allocation.backtest.served_profiles
        members = ", ".join(f"{f.name} {f.version}" for f in ensemble.forecasters)
        note = (f"served_*: the recommendation pipeline the service runs (ensemble of {members}; allocator "
                f"{allocator} {version}, chosen by validation Sharpe after costs; house limits from "
                f"{serve_config_path(config).name}), asked at every rebalance date with the client's drifted "
                f"weights, risk tolerance {', '.join(f'{n} {t}' for n, t in profiles.items())}; every "
                f"recommendation audited in {out / 'served_audit.db'}.")  # fmt: skip
        return served_strategies(pipeline, profiles), [note]

    return build


def oversight_section(report: Report, audit_path: Path) -> None:
    """The served path's audit log as a compliance officer would read it (serving/compliance.py):
    the chain, how many recommendations the house approval rules would have held for an admin, and
    what each risk check changed."""
    from rayfolio.serving.audit import AuditLog, sqlite_url
    from rayfolio.serving.compliance import compliance_report

    if not audit_path.exists():
        return
    figures = compliance_report(AuditLog(sqlite_url(audit_path)), None, None)
    recs, chain = figures.recommendations, figures.database.chain
    held = recs.by_status.get("pending_approval", 0)
    rows = [{"check": name, "evaluated": str(c.evaluated), "changed weights": str(c.changed),
             "share changed": f"{c.changed / c.evaluated:.1%}" if c.evaluated else "",
             "mean weight moved when it did": "" if c.amount_mean is None else f"{c.amount_mean:.3f}"}
            for name, c in figures.checks.items()]  # fmt: skip
    checks = pd.DataFrame(rows).set_index("check")
    report.add(
        "Oversight: the served path's audit log",
        f"Every recommendation of the served path above went through the service's audit log "
        f"({audit_path.name}): {chain.records} records, hash chain "
        f"{'verified' if chain.ok else 'BROKEN: ' + chain.reason}, last hash `{figures.database.last_hash}`. "
        f"The house approval rules (serve config: approval_turnover, approval_position_change) would have "
        f"held {held} of {recs.total} recommendations ({held / max(recs.total, 1):.1%}) for an admin's "
        f"approval; the backtest executes them as if approved. `rayfolio audit report --audit "
        f"{audit_path}` gives the full compliance report.",
        table(checks, floatfmt=".3f"),
    )
