"""The forecasters' section of a run report: the walk-forward's refits, the searches, the
significance of every model's out-of-sample Rank IC (against 0 and against the baselines), its
sign per year, and the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayfolio.data.markdown import Report, table
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.panel import Panel
from rayfolio.training.significance import newey_west_mean, paired_difference, verdict, yearly_signs
from rayfolio.training.stage import ForecastStage

PAIRED_BASELINES = ("momentum_12_1", "ridge")  # the bars every forecaster is tested against

METRIC_COLUMNS = ["model", "horizon", "ic", "rank_ic", "icir", "rank_icir", "hit_rate", "top_k_precision",
                  "long_short_sharpe", "days"]  # fmt: skip


def rank_ic_on_test(forecasts: ForecastStage) -> pd.DataFrame:
    """Test-period Rank IC, one row per model and one column per horizon: the line a run prints."""
    on_test = forecasts.metrics[forecasts.metrics.split == "test"]
    return on_test.pivot(index="model", columns="horizon", values="rank_ic").add_prefix("test Rank IC h=")


def daily_rank_ics(panel: Panel, scores: tuple[np.ndarray, np.ndarray], h: int) -> np.ndarray:
    """(T,) daily cross-sectional Rank IC of ``(t, scores)`` at the ``h``-th horizon."""
    t, s = scores
    return daily_rank_ic(s[..., h], panel.labels[t][..., h])


def significance_table(
    panel: Panel, scored: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], split: str = "test",
    baselines: tuple[str, ...] = PAIRED_BASELINES,
) -> pd.DataFrame:  # fmt: skip
    """Per model and horizon on ``split``: mean daily Rank IC with its Newey-West t-statistic (lag h - 1:
    h-day labels overlap) and one-sided p-value, the verdict against 0, and for every baseline in
    ``baselines`` the paired test of the daily Rank IC difference (same HAC lag)."""
    rows = []
    for h, horizon in enumerate(panel.horizons):
        series = {name: daily_rank_ics(panel, by[split], h) for name, by in scored.items() if split in by}
        for name, ic in series.items():
            test = newey_west_mean(ic, lag=horizon - 1)
            row = {"model": name, "horizon": horizon, "rank_ic": test.mean, "t (NW)": test.t,
                   "p (IC > 0)": test.p_greater, "vs 0": verdict(test), "days": test.n}  # fmt: skip
            for baseline in baselines:
                if baseline in series and baseline != name:
                    paired = paired_difference(ic, _aligned(scored, name, baseline, split, panel, h), horizon - 1)
                    row[f"p (> {baseline})"] = paired.p_greater
                    row[f"vs {baseline}"] = verdict(paired)
                else:
                    row[f"p (> {baseline})"], row[f"vs {baseline}"] = np.nan, ""
            rows.append(row)
    return pd.DataFrame(rows)


def _aligned(scored, name: str, other: str, split: str, panel: Panel, h: int) -> np.ndarray:
    """``other``'s daily Rank IC on ``name``'s dates (NaN where it has none)."""
    t, _ = scored[name][split]
    t_other, _ = scored[other][split]
    ic = pd.Series(daily_rank_ics(panel, scored[other][split], h), index=t_other)
    return ic.reindex(t).to_numpy()


def yearly_table(
    panel: Panel, scored: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], horizon: int, split: str = "test"
) -> pd.DataFrame:
    """Mean daily Rank IC per calendar year (rows) and model (columns) at ``horizon``: does the sign hold?"""
    h = panel.horizons.index(horizon)
    columns = {}
    for name, by in scored.items():
        if split in by:
            t, _ = by[split]
            columns[name] = yearly_signs(panel.dates[t], daily_rank_ics(panel, by[split], h))["mean"]
    frame = pd.DataFrame(columns)
    out = frame.map(lambda v: f"{v:+.3f}").astype(object)
    out.loc["years > 0"] = [f"{int(n)} of {len(frame)}" for n in (frame > 0).sum()]
    return out


def baseline_verdict(significance: pd.DataFrame, networks: tuple[str, ...]) -> str:
    """One sentence per network: where it beats every baseline on test Rank IC (paired HAC test,
    one-sided p < 0.05), else "no evidence"."""
    on = significance[significance.model.isin(networks)]
    paired = [c for c in on.columns if c.startswith("vs ")]
    beats = on[(on[paired] == "beats").all(axis=1)] if paired else on.iloc[:0]
    if beats.empty:
        return (
            "**No network beats the baselines' Rank IC out of sample at any horizon** (paired Newey-West test "
            "of the daily difference, one-sided p < 0.05): no evidence either way, or worse, as the table shows."
        )
    return "These beat every baseline's out-of-sample Rank IC (paired test, p < 0.05): " + ", ".join(
        f"{r.model} (h={r.horizon})" for r in beats.itertuples()
    )


def forecast_section(
    report: Report, forecasts: ForecastStage, cost_bps: float, panel: Panel, ensemble: tuple | None = None
) -> None:
    """Add "Forecasters" to ``report``; ``cost_bps``: what the long-short portfolio paid per unit of
    turnover; ``ensemble``: the walk-forward ensemble's (t, z) on the stitched test dates, if any."""
    searches = pd.DataFrame(
        [
            {
                "family": family,
                "configurations tried": len(o.trials),
                "best validation Rank IC": o.best.val_rank_ic,
                "deflated Sharpe (validation long-short)": o.deflated_sharpe,
                "window": o.best_config.window,
                "hidden": o.best_config.hidden,
                "layers": o.best_config.layers,
                "lr": o.best_config.lr,
                "registered": " ".join(map(str, forecasts.registered[f"{family}-forecaster"])),
            }
            for family, o in forecasts.searches.items()
        ]
    ).set_index("family")
    metrics = forecasts.metrics
    scored = dict(forecasts.scored or {})
    if ensemble is not None:
        scored["ensemble"] = {"test": ensemble}
    significance = significance_table(panel, scored)
    networks = tuple(forecasts.searches) + (("ensemble",) if ensemble is not None else ())
    middle = panel.horizons[len(panel.horizons) // 2]
    refits = pd.DataFrame(
        [
            {
                "refit": r.index,
                "trained on": f".. {r.splits.train_end}",
                "validation": f"{r.splits.validation_start} .. {r.splits.validation_end}",
                "forecasts": f"{r.splits.test_start} .. {r.splits.test_end or 'end'}",
                "time (s)": round(r.seconds),
                **{f"{m} Rank IC h={middle}": by.get(middle, np.nan) for m, by in r.test_rank_ic.items()
                   if m in (*forecasts.searches, "ridge", "momentum_12_1")},
            }
            for r in forecasts.refits
        ]
    ).set_index("refit")  # fmt: skip
    first = forecasts.refits[0].splits if forecasts.refits else None
    report.add(
        "Forecasters",
        f"Walk-forward: {len(forecasts.refits)} expanding-window refit(s); each one searches every family on Ray "
        "Tune (ASHA over Ray Train runs with DDP) on its own data, chooses on its own purged validation window, "
        "and forecasts until the next refit. Out-of-sample forecasts are stitched into one series"
        + (f" from {first.test_start}" if first else "")
        + ". The search table is the last refit's (the models the service gets); the deflated Sharpe is the "
        "probability that the chosen model's validation long-short Sharpe beats what the best of that many "
        "unskilled configurations would show (Bailey and Lopez de Prado).",
        table(refits, floatfmt=".4f"),
        table(searches, floatfmt=".4g"),
        baseline_verdict(significance, networks),
        "Significance (stitched out-of-sample period): mean daily Rank IC, its Newey-West t-statistic with "
        "h - 1 lags (h-day labels overlap) and one-sided p-value; against momentum and ridge, the paired test of "
        'the daily Rank IC difference with the same correction. "beats" only when the one-sided p-value is '
        'below 0.05; otherwise "no evidence either way".',
        table(significance, floatfmt=".4f", index=False),
        f"Mean daily Rank IC per year at h={middle} (the last row counts the years above 0):",
        table(yearly_table(panel, scored, middle)),
        "Stitched out-of-sample period: daily cross-sectional metrics; long-short is the top-minus-bottom "
        f"quintile portfolio, rebalanced daily, after {cost_bps:g} bps per unit of turnover.",
        table(metrics[metrics.split == "test"][METRIC_COLUMNS], floatfmt=".4f", index=False),
        "First refit's validation period:",
        table(metrics[metrics.split == "validation"][METRIC_COLUMNS], floatfmt=".4f", index=False),
        f"Forecasts per (date, symbol, horizon, model) for validation and test: `{forecasts.forecasts_path.name}`.",
    )


def confidence_section(report: Report, reliability: pd.DataFrame, horizon: int) -> None:
    """Does the served ``confidence`` mean what it says? Its levels against realised hit rates out of sample."""
    report.add(
        "Confidence reliability (test period)",
        f"The service's per-asset confidence is the probability that the {horizon}-day forecast's direction is right "
        "(the asset beats the cross-section's median when the ensemble's z > 0, trails it when z < 0): the "
        "members' agreement is cut into buckets on the validation split and each bucket's validation hit rate "
        "is its confidence (made non-decreasing in agreement). Out of sample, each level's realised hit rate "
        "should be close to the level itself; 0.5 is a coin.",
        table(reliability.astype({"forecasts": str}), floatfmt=".3f", index=False),  # counts, not 3 decimals
    )
