"""The forecasters' section of a run report: the searches, whether the networks
beat the baselines, and the out-of-sample metrics."""

from __future__ import annotations

import pandas as pd

from rayfolio.data.markdown import Report, table
from rayfolio.training.stage import ForecastStage, beats_baselines

METRIC_COLUMNS = ["model", "horizon", "ic", "rank_ic", "icir", "rank_icir", "hit_rate", "top_k_precision",
                  "long_short_sharpe", "days"]  # fmt: skip


def rank_ic_on_test(forecasts: ForecastStage) -> pd.DataFrame:
    """Test-period Rank IC, one row per model and one column per horizon: the line a run prints."""
    on_test = forecasts.metrics[forecasts.metrics.split == "test"]
    return on_test.pivot(index="model", columns="horizon", values="rank_ic").add_prefix("test Rank IC h=")


def baseline_verdict(metrics: pd.DataFrame) -> str:
    """One sentence: which networks do not beat the best baseline on test-period Rank IC."""
    verdict = beats_baselines(metrics)
    losers = verdict[~verdict.beats_baselines]
    if len(losers) == len(verdict):
        return "**No network beats the best baseline on test-period Rank IC, at any horizon.**"
    if losers.empty:
        return "Every network beats the best baseline on test-period Rank IC at every horizon."
    return "**These do not beat the best baseline on test-period Rank IC:** " + ", ".join(
        f"{r.model} (h={r.horizon}: {r.rank_ic:.4f} vs {r.best_baseline_rank_ic:.4f})" for r in losers.itertuples()
    )


def forecast_section(report: Report, forecasts: ForecastStage, cost_bps: float) -> None:
    """Add "Forecasters" to ``report``; ``cost_bps``: what the long-short portfolio paid per unit of turnover."""
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
                "registered": " ".join(forecasts.registered[f"{family}-forecaster"]),
            }
            for family, o in forecasts.searches.items()
        ]
    ).set_index("family")
    metrics = forecasts.metrics
    report.add(
        "Forecasters",
        "Each family is searched on Ray Tune (ASHA over Ray Train runs with DDP); the chosen configuration "
        "is the one with the best validation Rank IC. The deflated Sharpe is the probability that the chosen "
        "model's validation long-short Sharpe beats what the best of that many unskilled configurations would "
        "show (Bailey and Lopez de Prado).",
        table(searches, floatfmt=".4g"),
        baseline_verdict(metrics),
        "Test period (touched once, for this report): daily cross-sectional metrics; long-short is the "
        f"top-minus-bottom quintile portfolio, rebalanced daily, after {cost_bps:g} bps per unit of turnover.",
        table(metrics[metrics.split == "test"][METRIC_COLUMNS], floatfmt=".4f", index=False),
        "Validation period:",
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
