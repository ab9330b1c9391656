"""``rayfolio run``: every stage built so far, end to end, then the report.

Stages today: data (feature store on Ray Data, purged splits), forecasters
(LSTM, Transformer, GAT searched on Ray Tune over Ray Train, against
baselines), allocation (PPO and SAC agents searched on Ray Tune, then the
walk-forward backtest against the baseline portfolios). Later stages join
this list in order.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import yaml

from rayfolio.cluster.config import RunConfig
from rayfolio.cluster.report import Report, image, table
from rayfolio.cluster.runtime import ray_connection
from rayfolio.data.overview import data_overview
from rayfolio.data.sources import make_source
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.rl.report import BacktestResult
from rayfolio.rl.stage import AllocationStage, run_allocation
from rayfolio.training.registry import ModelRegistry
from rayfolio.training.stage import ForecastStage, beats_baselines, run_forecasters

STAGES = ("data", "forecasters", "allocation")


def _stage(number: int, name: str, what: str) -> float:
    print(f"\n[{number}/{len(STAGES)}] {name}: {what}", flush=True)
    return time.perf_counter()


def run_main_job(config: RunConfig, *, address: str | None = None, store_dir: Path | None = None) -> Path:
    """Run every stage on ``config``; returns the path of the written report."""
    run_dir = config.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    store_dir = config.store_dir(store_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with ray_connection(config.ray, address):
        t0 = _stage(1, "data", f"feature store from '{config.data.source}' on Ray Data")
        source = make_source(config.data.source, config.data.synthetic.to_config())
        summary = prepare_feature_store(source, store_dir, config.data.horizons)
        store = FeatureStore(store_dir)
        splitter = PurgedDateSplitter(config.splits, purge=max(config.data.horizons))
        overview = data_overview(store, splitter, run_dir / "plots")
        timings["data"] = time.perf_counter() - t0
        print("\n".join(summary.lines()))
        print(table(overview.splits, floatfmt=".0f"))

        t0 = _stage(2, "forecasters", f"{', '.join(config.forecasters.families)} on Ray Tune + Ray Train, baselines")
        registry = ModelRegistry(config.registry_root())
        forecasts = run_forecasters(store, splitter, config.forecasters, run_dir, registry)
        timings["forecasters"] = time.perf_counter() - t0
        print(table(_test_rank_ic(forecasts), floatfmt=".4f"))

        algorithms = ", ".join(a.upper() for a in config.allocation.agents.algorithms)
        t0 = _stage(3, "allocation", f"{algorithms} agents on Ray Tune, baselines, walk-forward backtest")
        allocation = run_allocation(
            store,
            splitter,
            config.allocation,
            run_dir,
            registry,
            source=config.data.source,
            forecasts_path=forecasts.forecasts_path,
        )
        timings["allocation"] = time.perf_counter() - t0
        print(table(allocation.backtest.metrics[COMPARISON], floatfmt=".3f"))
    timings["total"] = time.perf_counter() - started

    (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
    (run_dir / "summary.json").write_text(
        json.dumps({"data": asdict(summary), "timings_s": {k: round(v, 2) for k, v in timings.items()}}, indent=2)
    )
    report = Report(f"rayfolio run '{config.name}'")
    report.add(
        "Run",
        table(
            _frame(
                {
                    "source": config.data.source,
                    "feature store": str(store_dir),
                    "label horizons (trading days)": ", ".join(map(str, config.data.horizons)),
                    "purge between splits (trading days)": splitter.purge,
                    **{f"time: {k} (s)": f"{v:.1f}" for k, v in timings.items()},
                }
            )
        ),
    )
    report.add(
        "Data",
        f"{summary.rows:,} rows, {summary.symbols} symbols, {summary.start} .. {summary.end}; "
        f"{len(summary.features)} features and {len(summary.labels)} labels, point in time "
        "(a feature at date t uses only rows dated <= t).",
        "Splits (the last horizon's worth of trading days before each boundary is purged, "
        "so no label reaches into the next split):",
        table(overview.splits, floatfmt=".0f"),
        "Features and labels, statistics on the training split:",
        table(overview.features),
        "Largest one-day moves (check these first when a source looks wrong: splits, bad ticks):",
        table(overview.largest_moves, floatfmt=".3f", index=False),
        *(image(p, run_dir, p.stem.replace("_", " ")) for p in overview.plots),
    )
    _forecast_section(report, forecasts, run_dir)
    _allocation_section(report, allocation, config, run_dir)
    path = report.write(run_dir / "report.md")
    print(f"\nreport: {path}\ntotal {timings['total']:.1f}s", flush=True)
    return path


def _test_rank_ic(forecasts: ForecastStage) -> pd.DataFrame:
    on_test = forecasts.metrics[forecasts.metrics.split == "test"]
    return on_test.pivot(index="model", columns="horizon", values="rank_ic").add_prefix("test Rank IC h=")


def _forecast_section(report: Report, forecasts: ForecastStage, run_dir: Path) -> None:
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
    verdict = beats_baselines(forecasts.metrics)
    losers = verdict[~verdict.beats_baselines]
    if len(losers) == len(verdict):
        statement = "**No network beats the best baseline on test-period Rank IC, at any horizon.**"
    elif losers.empty:
        statement = "Every network beats the best baseline on test-period Rank IC at every horizon."
    else:
        statement = "**These do not beat the best baseline on test-period Rank IC:** " + ", ".join(
            f"{r.model} (h={r.horizon}: {r.rank_ic:.4f} vs {r.best_baseline_rank_ic:.4f})" for r in losers.itertuples()
        )
    columns = ["model", "horizon", "ic", "rank_ic", "icir", "rank_icir", "hit_rate", "top_k_precision",
               "long_short_sharpe", "days"]  # fmt: skip
    metrics = forecasts.metrics
    report.add(
        "Forecasters",
        "Each family is searched on Ray Tune (ASHA over Ray Train runs with DDP); the chosen configuration "
        "is the one with the best validation Rank IC. The deflated Sharpe is the probability that the chosen "
        "model's validation long-short Sharpe beats what the best of that many unskilled configurations would "
        "show (Bailey and Lopez de Prado).",
        table(searches, floatfmt=".4g"),
        statement,
        "Test period (touched once, for this report): daily cross-sectional metrics; long-short is the "
        "top-minus-bottom quintile portfolio, rebalanced daily, after 10 bps per unit of turnover.",
        table(metrics[metrics.split == "test"][columns], floatfmt=".4f", index=False),
        "Validation period:",
        table(metrics[metrics.split == "validation"][columns], floatfmt=".4f", index=False),
        f"Forecasts per (date, symbol, horizon, model) for validation and test: `{forecasts.forecasts_path.name}`.",
    )


COMPARISON = ["sharpe", "sharpe_ci_low", "sharpe_ci_high", "annual_return", "volatility", "max_drawdown", "turnover"]
COLUMNS = {
    "annual_return": "annual return",
    "volatility": "volatility",
    "sharpe": "Sharpe",
    "sharpe_ci_low": "Sharpe 95% CI low",
    "sharpe_ci_high": "Sharpe 95% CI high",
    "sortino": "Sortino",
    "calmar": "Calmar",
    "max_drawdown": "max drawdown",
    "var_95": "VaR 95 (daily)",
    "cvar_95": "CVaR 95 (daily)",
    "turnover": "turnover (per year)",
    "costs_paid": "costs paid (total)",
    "information_ratio": "information ratio vs equal weight",
}


def _allocation_section(report: Report, stage: AllocationStage, config: RunConfig, run_dir: Path) -> None:
    env = config.allocation.env
    searches = pd.DataFrame(
        [
            {
                "agent": algorithm.upper(),
                "trials (draws x seeds)": len(o.trials),
                "failed trials": int((o.trials["status"] != "ok").sum()),
                "chosen: seed": o.params["seed"],
                "lr": o.params["lr"],
                "gamma": o.params["gamma"],
                "steps": o.timesteps,
                "validation Sharpe": o.val_sharpe,
                "deflated Sharpe": o.deflated_sharpe,
                "registered": " ".join(stage.registered[f"{algorithm}-allocator"]),
            }
            for algorithm, o in stage.searches.items()
        ]
    ).set_index("agent")
    trials = pd.concat([o.trials.assign(agent=a.upper()) for a, o in stage.searches.items()], ignore_index=True)
    trial_columns = [c for c in ("agent", "sample", "seed", "lr", "gamma", "n_steps", "ent_coef", "best_val_sharpe",
                                 "steps_per_s", "status") if c in trials.columns]  # fmt: skip
    report.add(
        "Allocation agents",
        f"PPO and SAC (stable-baselines3) trade the {len(env.features)} features {', '.join(env.features)} over a "
        f"{env.window}-day window of every asset, rebalancing every {env.rebalance_every} trading days at "
        f"{env.cost_bps:g} bps per unit of turnover; the reward is the log growth of the portfolio's value after "
        "costs. Each trial (one hyperparameter draw, one seed) is a Ray Tune trial that reports its validation "
        "Sharpe after costs with a checkpoint; the chosen checkpoint has the best validation Sharpe of all, and "
        "its deflated Sharpe counts every checkpoint as a try."
        + (
            " The observation also carries the forecasters' ensemble forecast per horizon; out-of-sample "
            f"forecasts start with the validation split, so the agents learned on its first "
            f"{env.forecast_train_fraction:.0%} and were chosen on the rest."
            if env.forecast_features
            else ""
        ),
        table(searches, floatfmt=".4g"),
        "Every trial:",
        table(trials[trial_columns], floatfmt=".4g", index=False),
    )
    backtest_section(report, stage.backtest, stage.notes, config, run_dir)


def backtest_section(
    report: Report, result: BacktestResult, notes: tuple[str, ...], config: RunConfig, run_dir: Path
) -> None:
    env, bt = config.allocation.env, config.allocation.backtest
    metrics = result.metrics.rename(columns=COLUMNS).drop(columns="days")
    best = result.metrics.index[0]
    agents = [a for a in config.allocation.agents.algorithms if a in result.metrics.index]
    verdicts = []
    for agent in agents:
        m = result.metrics.loc[agent]
        rivals = result.metrics.drop(index=agents)
        top = rivals.index[0]
        rival = rivals.iloc[0]["sharpe"]
        beats = m["sharpe"] > rival
        within = m["sharpe_ci_low"] <= rival <= m["sharpe_ci_high"]
        verdicts.append(
            f"**{agent.upper()}** Sharpe {m['sharpe']:.2f} (95% interval {m['sharpe_ci_low']:.2f} .. "
            f"{m['sharpe_ci_high']:.2f}) {'beats' if beats else 'does not beat'} the best baseline, {top} "
            f"({rival:.2f})" + ("; the difference is inside the interval, so not significant." if within else ".")
        )
    days = int(result.metrics["days"].iloc[0])
    first, last = result.returns.index[0].date(), result.returns.index[-1].date()
    report.add(
        "Backtest (test period, after costs)",
        f"Walk-forward on {first} .. {last} ({days} trading days): every strategy starts in cash, trades at the "
        f"close of the same rebalance dates (every {env.rebalance_every} trading days) seeing only data dated up "
        f"to that close, pays {env.cost_bps:g} bps per unit of turnover, and drifts with prices in between. "
        f"Estimators (minimum variance, maximum Sharpe, HRP; skfolio) refit at every rebalance on the previous "
        f"{bt.lookback} trading days. Sharpe: mean / std of daily net returns x sqrt(252), no risk-free rate; "
        f"intervals from a stationary bootstrap ({bt.bootstrap_samples} resamples, mean block "
        f"{bt.bootstrap_block} days). Best Sharpe: **{best}**.",
        *verdicts,
        table(metrics, floatfmt=".3f"),
        *notes,
        *(image(p, run_dir, p.stem.replace("_", " ")) for p in result.plots),
        "Files: " + ", ".join(f"`{os.path.relpath(f, run_dir)}`" for f in result.files) + ".",
    )


def _frame(values: dict) -> pd.DataFrame:
    return pd.DataFrame({"value": [str(v) for v in values.values()]}, index=list(values))
