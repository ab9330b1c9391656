"""Live performance: the audit log's served recommendations joined with the returns that realised.

Each audited recommendation holds what was served at close ``as_of`` for the request's horizon h:
the ensemble's expected h-day log returns of every asset and the target weights. Once the store
has the label at ``as_of`` (``label_fwd_<h>d``, the forward log return over h trading days) it is
scored; until then it is *pending* (counted, never scored).

- Forecasts: every recommendation on one (as_of, horizon) carries the same cross-section (the
  ensemble's forecasts depend on the date only), so forecasts are one row per (as_of, horizon);
  the Rank IC is ``rayfolio.training.metrics.daily_rank_ic`` of that row against the labels.
- Hit rate: ``rayfolio.training.metrics.hit_rate``: the share of (date, asset) pairs with a forecast
  and a non-zero realised return whose signs agree (a forecast of exactly 0 is a miss).
- Portfolios: one per recommendation, the target weights held h days:
  ``sum_i w_i (exp(label_i) - 1)``, cash earning 0, against 1/N over the assets with a realised label
  that date (same date, same horizon). A portfolio holding an asset without a label is pending.

Levels (per horizon, the report takes the worst), over the last ``days`` dates with realised
returns: fewer than ``min_dates`` scored dates is "insufficient data": info with that reason, or
warning when the mean Rank IC is already below the floor (an early, inconclusive sign); with at
least ``min_dates`` scored dates a mean below ``ic_floor`` is critical, else info.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from rayfolio.data.conventions import CASH
from rayfolio.data.sources import DateWindow
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import RECORDS, AuditLogUnreadable, audit_url, open_existing, shown_url
from rayfolio.serving.held_gauges import hold_gauge
from rayfolio.training.metrics import daily_rank_ic, hit_rate

LEVELS = ("info", "warning", "critical")
RECOMMENDATION = "recommendation"  # the audit records' kind


class LivePerformanceError(ValueError):
    """An audit log, window or setting the live-performance join cannot use; one line naming it."""


@dataclass(frozen=True)
class PerformanceConfig:
    ic_floor: float = 0.0  # mean Rank IC below this over the recent dates: critical
    days: int = 60  # the recent window: the last ``days`` dates with realised returns
    min_dates: int = 20  # scored dates needed before the mean can be critical

    def __post_init__(self) -> None:
        if not np.isfinite(self.ic_floor) or not -1 <= self.ic_floor <= 1:
            raise LivePerformanceError(f"--ic-floor must be a Rank IC between -1 and 1, got {self.ic_floor}")
        if self.days < 1:
            raise LivePerformanceError(f"--days must be at least 1, got {self.days}")
        if self.min_dates < 1:
            raise LivePerformanceError(f"min_dates must be at least 1, got {self.min_dates}")


Window = DateWindow  # as_of dates to score, both ends included; None: open
EVERY_DATE = Window()


def parse_window(text: str | None) -> Window:
    """``START:END`` (ISO dates; either side may be left empty) -> Window."""
    return Window() if text is None else DateWindow.parse(text, LivePerformanceError)


# ----- the audit log -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedRecommendation:
    request_id: str
    as_of: dt.date
    horizon: int  # the request's horizon_days
    target_weights: dict[str, float]  # symbol -> weight, CASH included
    expected_returns: dict[str, float]  # symbol -> expected h-day log return


def recommendation_of(request_id: str, payload: dict) -> ServedRecommendation:
    """An audited recommendation's payload ``{"request": ..., "response": ...}`` -> what was served."""
    response = payload["response"]
    return ServedRecommendation(request_id, dt.date.fromisoformat(response["as_of"]),
                                int(payload["request"]["risk_profile"]["horizon_days"]),
                                response["target_weights"], response["expected_returns"])  # fmt: skip


def read_recommendations(audit: str, window: Window = EVERY_DATE) -> list[ServedRecommendation]:
    """The recommendations served for as_of dates in ``window``, in the order written, from the audit
    log at ``audit`` (a SQLAlchemy URL or a SQLite file).

    Read only: it never creates a database or a table (``AuditLog`` would), so a mistyped
    path is an error instead of a new, empty log."""
    try:
        log = open_existing(audit)
        query = sa.select(RECORDS.c.request_id, RECORDS.c.payload).where(RECORDS.c.kind == RECOMMENDATION)
        with log.engine.connect() as c:
            rows = c.execute(query.order_by(RECORDS.c.seq)).all()
        log.engine.dispose()
    except AuditLogUnreadable as err:
        raise LivePerformanceError(str(err)) from None
    served = (recommendation_of(request_id, json.loads(payload)) for request_id, payload in rows)
    return [r for r in served if r.as_of in window]


# ----- the join ------------------------------------------------------------------------------


def forecast_panel(served: Iterable[ServedRecommendation], horizon: int) -> pd.DataFrame:
    """(dates, symbols) expected h-day log returns served, one row per as_of: recommendations on one
    date share the ensemble's cross-section, so the last one served stands for the date."""
    rows = {pd.Timestamp(r.as_of): r.expected_returns for r in served if r.horizon == horizon}
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float).sort_index()


def weight_panel(served: Iterable[ServedRecommendation], horizon: int) -> pd.DataFrame:
    """(recommendations, symbols) target weights, cash dropped (it earns 0), 0 where not held;
    indexed by (request_id, as_of)."""
    chosen = [r for r in served if r.horizon == horizon]
    index = pd.MultiIndex.from_tuples([(r.request_id, pd.Timestamp(r.as_of)) for r in chosen],
                                      names=["request_id", "as_of"])  # fmt: skip
    weights = [{s: w for s, w in r.target_weights.items() if s != CASH} for r in chosen]
    return pd.DataFrame(weights, index=index, dtype=float).fillna(0.0)


def realised_labels(store: FeatureStore, horizon: int, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """(dates, symbols) ``label_fwd_<h>d`` at each date; NaN where it has not realised yet (or the
    store does not have the date)."""
    label = f"label_fwd_{horizon}d"
    if label not in store.label_names:
        raise LivePerformanceError(f"store {store.path}: no {label} for the served {horizon}-day horizon")
    if len(dates) == 0:
        return pd.DataFrame(index=dates, dtype=float)
    frame = store.to_pandas([label], start=dates.min().date().isoformat(), end=dates.max().date().isoformat())
    return frame.pivot(index="date", columns="symbol", values=label).reindex(dates)


def rank_ic_by_date(forecasts: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Rank IC of each date's served forecasts against its realised labels, over the forecast's assets;
    NaN on dates with fewer than 3 assets realised (pending ones have none)."""
    aligned = labels.reindex(index=forecasts.index, columns=forecasts.columns)
    return pd.Series(daily_rank_ic(forecasts.to_numpy(), aligned.to_numpy()), index=forecasts.index)


def portfolio_returns(weights: pd.DataFrame, labels: pd.DataFrame, forecasts: pd.DataFrame) -> pd.DataFrame:
    """Per recommendation (rows of ``weights``): the served portfolio's realised h-day simple return,
    1/N's over the same date and the excess; NaN (pending) where a held asset has no realised label.

    ``labels``: (dates, symbols) h-day log returns; ``forecasts``: (dates, symbols) what was served,
    whose assets with a realised label that date are the ones 1/N holds."""
    dates = weights.index.get_level_values("as_of")
    simple = np.expm1(labels.reindex(index=dates, columns=forecasts.columns).to_numpy())  # (R, N)
    held = weights.reindex(columns=forecasts.columns, fill_value=0.0).to_numpy()  # (R, N)
    served = (held * np.nan_to_num(simple)).sum(axis=1)  # (R,)
    served[((held != 0) & ~np.isfinite(simple)).any(axis=1)] = np.nan
    universe = np.isfinite(simple) & forecasts.reindex(dates).notna().to_numpy()  # (R, N) what 1/N holds
    with np.errstate(invalid="ignore", divide="ignore"):
        equal = np.where(universe, simple, 0.0).sum(axis=1) / universe.sum(axis=1)
    equal[np.isnan(served)] = np.nan
    return pd.DataFrame({"served": served, "equal_weight": equal, "excess": served - equal}, index=weights.index)


# ----- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HorizonPerformance:
    horizon: int
    rank_ic: pd.Series  # (dates,) per served date; NaN: pending, or fewer than 3 assets realised
    hit_rate: float  # over the recent dates
    portfolios: pd.DataFrame  # (recommendations, [served, equal_weight, excess]); NaN: pending
    recent: pd.DatetimeIndex  # the last ``days`` served dates with realised returns

    @property
    def scored(self) -> pd.Series:
        return self.rank_ic.dropna()

    @property
    def recent_rank_ic(self) -> pd.Series:
        return self.rank_ic.reindex(self.recent).dropna()

    @property
    def recent_portfolios(self) -> pd.DataFrame:
        scored = self.portfolios.dropna()
        return scored[scored.index.get_level_values("as_of").isin(self.recent)]

    def summary(self) -> dict:
        recent, portfolios = self.recent_rank_ic, self.recent_portfolios
        return {
            "rank_ic_mean": _number(recent.mean()),
            "rank_ic_dates": len(recent),
            "rank_ic_mean_all": _number(self.scored.mean()),
            "scored_dates": len(self.scored),
            "pending_dates": int(self.rank_ic.isna().sum()),
            "hit_rate": _number(self.hit_rate),
            "served_return_mean": _number(portfolios["served"].mean()),
            "equal_weight_return_mean": _number(portfolios["equal_weight"].mean()),
            "excess_return_mean": _number(portfolios["excess"].mean()),
            "portfolios": len(portfolios),
            "pending_portfolios": int(self.portfolios["served"].isna().sum()),
        }


def _number(x: float) -> float | None:
    """JSON has no NaN: a missing figure is null."""
    return float(x) if np.isfinite(x) else None


def assess_horizon(
    served: list[ServedRecommendation], store: FeatureStore, horizon: int, days: int
) -> HorizonPerformance:
    """Score the recommendations served for ``horizon`` against the store's realised labels; the
    recent window is the last ``days`` served dates with realised returns."""
    forecasts = forecast_panel(served, horizon)
    labels = realised_labels(store, horizon, pd.DatetimeIndex(forecasts.index))
    aligned = labels.reindex(index=forecasts.index, columns=forecasts.columns)  # (dates, forecast's symbols)
    realised = aligned.notna().any(axis=1).to_numpy()
    recent = pd.DatetimeIndex(forecasts.index[realised][-days:])
    window = forecasts.index.isin(recent)
    return HorizonPerformance(
        horizon,
        rank_ic_by_date(forecasts, labels),
        hit_rate(forecasts.to_numpy()[window], aligned.to_numpy()[window]),
        portfolio_returns(weight_panel(served, horizon), labels, forecasts),
        recent,
    )


def verdict(p: HorizonPerformance, config: PerformanceConfig) -> tuple[str, tuple[str, ...]]:
    """(level, reasons) of one horizon; the rule is the module's docstring."""
    ic, n, h = p.recent_rank_ic.mean(), len(p.recent_rank_ic), p.horizon
    if n == 0:
        pending = int(p.rank_ic.isna().sum())
        return "info", (f"{h}d: insufficient data: no served forecast has realised returns yet ({pending} pending)",)
    figure = f"mean Rank IC {ic:.4f} over the last {n} scored dates"
    if n < config.min_dates:
        if ic < config.ic_floor:
            return "warning", (f"{h}d: {figure} is below the floor {config.ic_floor:g}, but fewer than "
                               f"{config.min_dates} dates are scored: insufficient data to be sure",)  # fmt: skip
        return "info", (f"{h}d: insufficient data: {n} scored dates, {config.min_dates} needed ({figure})",)
    if ic < config.ic_floor:
        return "critical", (f"{h}d: {figure} is below the floor {config.ic_floor:g}",)
    return "info", ()


@dataclass(frozen=True)
class PerformanceReport:
    audit: str  # the audit log's URL, password hidden
    store: str
    config: PerformanceConfig
    window: tuple[dt.date | None, dt.date | None]  # as_of dates looked at
    recommendations: int  # served in the window, every horizon
    horizons: tuple[HorizonPerformance, ...]
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def verdicts(self) -> dict[int, tuple[str, tuple[str, ...]]]:
        return {p.horizon: verdict(p, self.config) for p in self.horizons}

    @property
    def level(self) -> str:
        return max((level for level, _ in self.verdicts.values()), key=LEVELS.index, default="info")

    @property
    def reasons(self) -> list[str]:
        if not self.horizons:
            return ["insufficient data: no recommendations served in the window"]
        return [reason for _, reasons in self.verdicts.values() for reason in reasons]

    def as_json(self) -> dict:
        verdicts = self.verdicts
        return {
            "level": self.level,
            "reasons": self.reasons,
            "window": [d.isoformat() if d else None for d in self.window],
            "created_at": self.created_at,
            "audit": self.audit,
            "store": self.store,
            "ic_floor": self.config.ic_floor,
            "days": self.config.days,
            "min_dates": self.config.min_dates,
            "recommendations": self.recommendations,
            "hit_rate_definition": "share of (date, asset) pairs with a forecast and a non-zero realised return "
            "whose signs agree, over the recent dates",
            "horizons": {str(p.horizon): self._horizon_json(p, verdicts[p.horizon][0]) for p in self.horizons},
        }

    @staticmethod
    def _horizon_json(p: HorizonPerformance, level: str) -> dict:
        series = {d.date().isoformat(): float(v) for d, v in p.scored.items()}  # the full per-date series
        return {"level": level, **p.summary(), "rank_ic": series}

    def table(self) -> pd.DataFrame:
        """One row per horizon: the figures a person reads first (recent: the last ``days`` scored dates)."""
        columns = {"rank_ic_mean": "Rank IC (recent)", "rank_ic_dates": "recent dates", "rank_ic_mean_all":
                   "Rank IC (all)", "pending_dates": "pending dates", "hit_rate": "hit rate", "served_return_mean":
                   "served return", "equal_weight_return_mean": "1/N return", "excess_return_mean": "excess",
                   "portfolios": "portfolios"}  # fmt: skip
        rows = {f"{p.horizon}d": p.summary() for p in self.horizons}
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns)).rename(columns=columns)

    def write(self, out: Path) -> Path:
        """``out/performance.json``, replaced whole (a reader never sees half of it)."""
        out.mkdir(parents=True, exist_ok=True)
        path = out / "performance.json"
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.as_json(), indent=2, allow_nan=False) + "\n")
        partial.replace(path)
        return path


def live_performance(audit: str, store: FeatureStore, window: Window, config: PerformanceConfig) -> PerformanceReport:
    """Join the audit log at ``audit`` (URL or SQLite file) with ``store``'s realised returns, per served horizon."""
    served = read_recommendations(audit, window)
    days = sorted(r.as_of for r in served)
    span = (window.start or (days[0] if days else None), window.end or (days[-1] if days else None))
    horizons = tuple(assess_horizon(served, store, h, config.days) for h in sorted({r.horizon for r in served}))
    return PerformanceReport(shown_url(audit_url(audit)), str(store.path), config, span, len(served), horizons)


def export_gauges(report: PerformanceReport) -> bool:
    """``rayfolio_live_rank_ic{horizon}`` and ``rayfolio_live_excess_return{horizon}``, held by the
    monitor gauges' actor (serving/held_gauges.py: they stay exported after this command ends), when
    this process is connected to Ray. A horizon without a figure yet is left unset. Returns whether
    Ray was there to take them."""
    figures = {"rank_ic_mean": {}, "excess_return_mean": {}}
    for p in report.horizons:
        summary = p.summary()
        for key, values in figures.items():
            if summary[key] is not None:
                values[str(p.horizon)] = summary[key]
    return hold_gauge("rayfolio_live_rank_ic", "mean Rank IC of the served forecasts over the recent dates",
                      "horizon", figures["rank_ic_mean"]) and hold_gauge(
        "rayfolio_live_excess_return", "served portfolios' mean realised return minus 1/N's", "horizon",
        figures["excess_return_mean"])  # fmt: skip
