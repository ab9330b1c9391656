"""What the console shows from a run directory, as plain data: the latest backtest (metrics and
equity / drawdown curves, from the files DESIGN.md names) and a comparison of registered model
versions (their registry metrics, and the Rank IC by calendar year of each forecaster family's
walk-forward out-of-sample forecasts). Pure functions of files; the routes are report_routes.py.

Every problem a caller can cause is a ``RequestError`` naming the parameter or the missing file
(by the run's name, never the server's path).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from rayfolio.data.store import FeatureStore
from rayfolio.data.yaml_files import read_yaml_mapping
from rayfolio.rl.config import EnvConfig
from rayfolio.serving.errors import RequestError
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError

MAX_POINTS = 500  # per curve: enough for a chart 1280 px wide, small enough to send every time
# Where a run's backtest lands: the main job's at the run's root, `rayfolio backtest`'s in backtest/.
BACKTEST_DIRS = (".", "backtest")
MIN_COMPARED, MAX_COMPARED = 2, 6


def latest_backtest_dir(run_dir: Path) -> Path:
    """The run's newest backtest (by its metrics.json's time); 404 when it has none yet."""
    found = [run_dir / d for d in BACKTEST_DIRS if (run_dir / d / "metrics.json").is_file()
             and (run_dir / d / "returns.parquet").is_file()]  # fmt: skip
    if not found:
        raise RequestError("no_backtest", f"run {run_dir.name!r} has no backtest yet (metrics.json and returns.parquet "
                           "appear when `rayfolio run` or `rayfolio backtest` finishes)", 404)  # fmt: skip
    return max(found, key=lambda d: (d / "metrics.json").stat().st_mtime_ns)


def sample_points(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Row indices of at most ``max_points`` evenly spaced trading days, the first and the last
    always kept (the last is "today's" value)."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def curves(returns: pd.DataFrame, max_points: int = MAX_POINTS) -> dict:
    """Equity (1 invested, net daily returns compounded) and drawdown (equity / its running peak,
    the start's 1 included, - 1: as the report's plot) per strategy, on sampled days. A strategy's
    days before its first return are null (the index may start later)."""
    equity = (1.0 + returns).cumprod()  # NaN stays NaN, the product carries over it
    drawdown = equity / np.maximum(equity.cummax(), 1.0) - 1.0
    rows = sample_points(len(returns), max_points)
    return {
        "dates": [d.date().isoformat() for d in returns.index[rows]],
        "equity": {s: _floats(equity[s].to_numpy()[rows]) for s in returns.columns},
        "drawdown": {s: _floats(drawdown[s].to_numpy()[rows]) for s in returns.columns},
    }


def backtest(run_dir: Path, max_points: int = MAX_POINTS) -> dict:
    """The latest backtest of ``run_dir``: metrics per strategy (metrics.json, best Sharpe first) and
    the curves from returns.parquet."""
    where = latest_backtest_dir(run_dir)
    metrics = json.loads((where / "metrics.json").read_text())
    returns = pd.read_parquet(where / "returns.parquet")
    returns.index = pd.DatetimeIndex(returns.index)
    strategies = [s for s in metrics if s in returns.columns]
    return {
        "run": run_dir.name if where == run_dir else f"{run_dir.name}/{where.name}",
        "as_of": returns.index[-1].date().isoformat(),
        "first": returns.index[0].date().isoformat(),
        "cost_bps": cost_bps(run_dir),
        "strategies": strategies,
        "metrics": {s: {k: _float(v) for k, v in metrics[s].items()} for s in strategies},
        "curves": curves(returns[strategies], max_points),
        "sampling": f"{min(len(returns), max_points)} of {len(returns)} trading days, evenly spaced, last day kept",
    }


def cost_bps(run_dir: Path) -> float | None:
    """The costs the run's backtest paid per unit of turnover, from its config.yaml; None if unknown."""
    try:
        env = read_yaml_mapping(run_dir / "config.yaml", "run config", ValueError).get("allocation", {}).get("env", {})
        return EnvConfig.model_validate(env).cost_bps
    except (OSError, ValueError, AttributeError, ValidationError):
        return None


@dataclass(frozen=True)
class Entry:
    name: str
    version: str


def parse_models(text: str, registry: ModelRegistry) -> list[Entry]:
    """``name`` (its production version) or ``name:version``, comma-separated, 2..6 of them; a 422
    naming ``models`` and the entry otherwise."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not MIN_COMPARED <= len(parts) <= MAX_COMPARED:
        raise RequestError("invalid_request", f"models: name {MIN_COMPARED} to {MAX_COMPARED} entries (name or "
                           f"name:version, comma-separated), got {len(parts)}")  # fmt: skip
    known, out = set(registry.models()), []
    for part in parts:
        name, _, version = part.partition(":")
        if name not in known:
            # 404, as GET /v1/models/{name} answers: a well-formed request naming what is not registered.
            raise RequestError("not_found", f"models: no model named {name[:64]!r}", 404)
        if not version:
            version = registry.stage_version(name, "production") or ""
            if not version:
                raise RequestError("invalid_request", f"models: {name} has no production version; name one "
                                   f"({name}:{registry.versions(name)[-1]})")  # fmt: skip
        elif version not in registry.versions(name):
            raise RequestError("not_found", f"models: {name} has no version {version[:64]!r}", 404)
        out.append(Entry(name, version))
    return out


def version_summary(registry: ModelRegistry, entry: Entry) -> dict:
    """One version's card facts and its registry metrics: ``{split: {"<metric>@<horizon>": value}}``
    from by_split_and_horizon, the other plain numbers under "overall"."""
    try:
        version = registry.get(entry.name, entry.version)  # checksums verified
    except RegistryError as err:
        raise RequestError("registry", str(err).replace(str(registry.root), "<registry>"), 409) from None
    by_split: dict[str, dict[str, float | None]] = {}
    for row in version.metrics.get("by_split_and_horizon", []):
        values = by_split.setdefault(row["split"], {})
        for key, value in row.items():
            if key not in ("split", "horizon") and isinstance(value, int | float):
                values[f"{key}@{row['horizon']}"] = _float(value)
    overall = {
        k: _float(v) for k, v in version.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    card = version.card
    return {
        "name": entry.name,
        "version": entry.version,
        "stage": registry.stage_of(version),
        "kind": card.kind,
        "family": getattr(card, "family", None) or getattr(card, "algorithm", None),
        "created_at": version.manifest.get("created_at"),
        "metrics": {**by_split, "overall": overall},
    }


def rank_ic_by_year(forecasts: pd.DataFrame, panel: Panel, horizon: int) -> dict[str, dict[str, float | None]]:
    """Mean daily Rank IC (training/metrics.py) per model and calendar year of ``forecasts`` (date,
    symbol, horizon, model, forecast rows) at ``horizon`` against the panel's realised forward returns."""
    if horizon not in panel.horizons:
        raise RequestError("invalid_request", f"horizon: must be one of {list(panel.horizons)}")
    h = panel.horizons.index(horizon)
    rows = forecasts[forecasts["horizon"] == horizon]
    symbols = {s: i for i, s in enumerate(panel.symbols.tolist())}
    out = {}
    for model, frame in rows.groupby("model", sort=True):
        wide = frame.pivot_table(index="date", columns="symbol", values="forecast", aggfunc="mean")
        wide = wide[[s for s in wide.columns if s in symbols]]
        t = pd.DatetimeIndex(panel.dates).get_indexer(pd.DatetimeIndex(wide.index))
        inside = t >= 0  # a date the store no longer holds has no realised return to score against
        pred = np.full((int(inside.sum()), len(symbols)), np.nan)
        pred[:, [symbols[s] for s in wide.columns]] = wide.to_numpy()[inside]
        ic = daily_rank_ic(pred, panel.labels[t[inside], :, h].astype(np.float64))
        years = pd.Series(ic, index=pd.DatetimeIndex(wide.index[inside]).year)
        out[str(model)] = {str(y): _float(v) for y, v in years.groupby(level=0).mean().items()}
    return out


class RankIcByYear:
    """``rank_ic_by_year`` of a run's forecasts.parquet, cached per (the file's and the store's
    version, horizon, split): the file holds ~700k rows for the quickstart, read in seconds."""

    def __init__(self, run_dir: Path, store: Path) -> None:
        self.path, self.store = run_dir / "forecasts.parquet", store
        self.cache: dict[tuple, dict] = {}

    def __call__(self, horizon: int, split: str) -> tuple[dict[str, dict[str, float | None]], str]:
        """(model -> year -> Rank IC, the sentence naming the source)."""
        if not self.path.is_file():
            raise RequestError("no_forecasts", f"run {self.path.parent.name!r} has no forecasts.parquet yet (the "
                               "walk-forward of `rayfolio run` writes it)", 404)  # fmt: skip
        stat, store = self.path.stat(), FeatureStore(self.store)
        key = (stat.st_mtime_ns, stat.st_size, store.version, horizon, split)
        if key not in self.cache:
            forecasts = pd.read_parquet(self.path, filters=[("horizon", "==", horizon), ("split", "==", split)])
            found = rank_ic_by_year(forecasts, Panel.from_store(store), horizon)
            first, last = (forecasts["date"].min(), forecasts["date"].max()) if len(forecasts) else (None, None)
            span = f" ({first.date()} .. {last.date()})" if first is not None else ""
            source = (f"walk-forward out-of-sample forecasts of run {self.path.parent.name!r}, {split} split{span}: "
                      f"mean daily Rank IC across assets at the {horizon}-day horizon, per calendar year, against "
                      "the feature store's realised forward returns")  # fmt: skip
            self.cache = {k: v for k, v in self.cache.items() if k[:3] == key[:3]}  # drop older files' entries
            self.cache[key] = {"by_model": found, "source": source}
        hit = self.cache[key]
        return hit["by_model"], hit["source"]


def _float(value) -> float | int | None:
    """A JSON number, or null for NaN / infinity (and for anything not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        return None
    if isinstance(value, int | np.integer):
        return int(value)  # a count (days) stays a count
    value = float(value)
    return value if math.isfinite(value) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.astype(np.float64)]
