"""Backtest output (DESIGN.md): metrics.json, returns.parquet, weights.parquet
and plots, every file written beside its final name and renamed into place;
and the allocation and backtest sections of a run report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: runs on servers and in CI without a display
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from rayfolio.data.conventions import CASH, TRADING_DAYS_PER_YEAR
from rayfolio.data.markdown import Report, image, table
from rayfolio.rl.backtest import StrategyRun
from rayfolio.rl.config import AllocationConfig, BacktestConfig
from rayfolio.rl.measures import performance
from rayfolio.training.significance import sharpe_difference

if TYPE_CHECKING:  # rl/stage.py writes its backtest with this module
    from rayfolio.rl.stage import AllocationStage

BENCHMARK = "equal_weight"  # the information ratio's reference
SERVED_PREFIX = "served_"  # the service's own decision path, one strategy per risk profile
INDEX = "index_buy_hold"
# The weights plot draws this many assets per strategy (the largest mean weights) and one "other" band:
# one band per asset is unreadable at hundreds of assets, and its cost grows with them.
WEIGHT_BANDS = 10
OTHER = "other"

# The metrics a command prints after a backtest, and every metric's name in the report's table.
COMPARISON = ["sharpe", "sharpe_ci_low", "sharpe_ci_high", "sharpe_vs_equal_weight", "p_vs_equal_weight",
              "annual_return", "volatility", "max_drawdown", "turnover"]  # fmt: skip
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
    "sharpe_vs_equal_weight": "Sharpe - 1/N's",
    "p_vs_equal_weight": "p (Sharpe > 1/N's)",
}


@dataclass(frozen=True)
class BacktestResult:
    metrics: pd.DataFrame  # one row per strategy, sorted by Sharpe
    returns: pd.DataFrame  # daily net returns, one column per strategy
    weights: pd.DataFrame  # long: date, strategy, symbol, weight (targets at rebalance dates)
    plots: tuple[Path, ...]
    files: tuple[Path, ...]


def score_runs(runs: dict[str, StrategyRun], config: BacktestConfig) -> pd.DataFrame:
    """Metrics per strategy over the dates every strategy has (the index may start later)."""
    returns = pd.concat({name: run.returns for name, run in runs.items()}, axis=1).dropna()
    benchmark = returns[BENCHMARK].to_numpy() if BENCHMARK in returns else None
    rows = {}
    for name, run in runs.items():
        rows[name] = performance(
            returns[name].to_numpy(),
            costs=run.costs.reindex(returns.index).to_numpy(),
            turnover=run.turnover.to_numpy(),
            benchmark=benchmark,
            bootstrap_samples=config.bootstrap_samples,
            bootstrap_block=config.bootstrap_block,
            seed=config.seed,
        )
        if benchmark is not None and name != BENCHMARK:
            # Ledoit and Wolf (2008): the Sharpe difference against 1/N on the same days, HAC standard error.
            test = sharpe_difference(returns[name].to_numpy(), benchmark, method="hac")
            rows[name] |= {"sharpe_vs_equal_weight": test.difference, "p_vs_equal_weight": test.p_greater,
                           "p_below_equal_weight": test.p_less}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index").sort_values("sharpe", ascending=False)


def against_equal_weight(row: pd.Series, alpha: float = 0.05) -> str:
    """The one rule the report words a strategy against 1/N by: "beats" only when the one-sided
    Ledoit-Wolf p-value is below ``alpha``."""
    p_greater, p_less = row.get("p_vs_equal_weight", np.nan), row.get("p_below_equal_weight", np.nan)
    if not np.isfinite(p_greater):
        return "cannot be tested against 1/N"
    if p_greater < alpha:
        return f"beats 1/N (p = {p_greater:.3f})"
    if p_less < alpha:
        return f"trails 1/N (p = {p_less:.3f})"
    return f"no evidence either way against 1/N (p = {p_greater:.2f} that it is better)"


def write_backtest(runs: dict[str, StrategyRun], config: BacktestConfig, out: Path) -> BacktestResult:
    out.mkdir(parents=True, exist_ok=True)
    metrics = score_runs(runs, config)
    returns = pd.concat({name: run.returns for name, run in runs.items()}, axis=1)
    weights = pd.concat(
        [
            run.weights.rename_axis(columns="symbol").stack().rename("weight").reset_index().assign(strategy=name)
            for name, run in runs.items()
        ],
        ignore_index=True,
    )[["date", "strategy", "symbol", "weight"]]
    files = (
        _atomic(out / "metrics.json", lambda p: p.write_text(json.dumps(_json_ready(metrics), indent=2) + "\n")),
        _atomic(out / "returns.parquet", lambda p: returns.to_parquet(p)),
        _atomic(out / "weights.parquet", lambda p: weights.to_parquet(p, index=False)),
    )
    plots = (
        _equity(returns, out / "plots" / "equity_curves.png"),
        _drawdowns(returns, out / "plots" / "drawdowns.png"),
        _weights(runs, out / "plots" / "weights_over_time.png"),
    )
    return BacktestResult(metrics, returns, weights, plots, files)


def _json_ready(metrics: pd.DataFrame) -> dict:
    return {
        name: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for name, row in metrics.to_dict("index").items()
    }


def _atomic(path: Path, write) -> Path:
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    os.replace(partial, path)
    return path


def _equity(returns: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5))
    for name in returns:
        ax.plot((1 + returns[name].dropna()).cumprod(), label=name, lw=1.8 if name in ("ppo", "sac") else 1.0)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    return _finish(fig, ax, path, "value of 1 invested (log scale), after costs", "Test period: equity curves")


def _drawdowns(returns: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(10, 4))
    for name in returns:
        value = (1 + returns[name].dropna()).cumprod()
        ax.plot(value / np.maximum(value.cummax(), 1.0) - 1, label=name, lw=1.0)
    return _finish(fig, ax, path, "drawdown", "Test period: drawdowns from the running peak")


def _finish(fig: plt.Figure, ax: plt.Axes, path: Path, ylabel: str, title: str) -> Path:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def weight_bands(weights: pd.DataFrame, k: int = WEIGHT_BANDS) -> pd.DataFrame:
    """(dates, assets + CASH) target weights -> (dates, the k assets of largest mean weight, largest
    first, then OTHER summing the rest, then CASH). Negative weights (shorts) count as 0; with at most
    k + 1 assets every asset keeps its band."""
    held = weights.clip(lower=0)
    assets = held.drop(columns=CASH)
    if assets.shape[1] <= k + 1:
        return held
    top = assets.mean().sort_values(ascending=False, kind="stable").index[:k]
    return pd.concat([assets[top], assets.drop(columns=top).sum(axis=1).rename(OTHER), held[CASH]], axis=1)


def _weights(runs: dict[str, StrategyRun], path: Path) -> Path:
    shown = [name for name, run in runs.items() if run.weights.shape[1] > 2]  # not the one-asset index
    bands = {name: weight_bands(runs[name].weights) for name in shown}
    # One colour per asset across panels, in the order assets first appear; other and cash in greys.
    assets = list(dict.fromkeys(c for b in bands.values() for c in b.columns if c not in (OTHER, CASH)))
    palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]  # its greys are ours
    colours = {a: palette[i % len(palette)] for i, a in enumerate(assets)} | {OTHER: (0.45, 0.45, 0.45),
                                                                               CASH: (0.85, 0.85, 0.85)}  # fmt: skip
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 1.6 * len(shown) + 0.8), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], shown, strict=True):
        weights = bands[name]
        ax.stackplot(weights.index, weights.T.to_numpy(), labels=weights.columns,
                     colors=[colours[c] for c in weights.columns], step="post")  # fmt: skip
        ax.set_ylim(0, max(1.0, float(weights.sum(axis=1).max())))
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(loc="center left", bbox_to_anchor=(1.005, 0.5), fontsize=5, frameon=False, ncol=2)
    fig.suptitle(f"Target weights at each rebalance: the {WEIGHT_BANDS} largest holdings on average, "
                 f"{OTHER} (dark grey), cash (light grey)")  # fmt: skip
    fig.subplots_adjust(left=0.07, right=0.84, top=0.95, bottom=0.04, hspace=0.15)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def allocation_section(report: Report, stage: AllocationStage, config: AllocationConfig, run_dir: Path) -> None:
    """Add "Allocation agents" (the searches, every trial) and the backtest section to ``report``."""
    env = config.env
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
                "test Sharpe over seeds (chosen draw)": seed_spread(o.trials, o.params.get("sample")),
                "test Sharpe over all trials": seed_spread(o.trials, None),
                "registered": " ".join(stage.registered[f"{algorithm}-allocator"]),
            }
            for algorithm, o in stage.searches.items()
        ]
    ).set_index("agent")
    trials = pd.concat([o.trials.assign(agent=a.upper()) for a, o in stage.searches.items()], ignore_index=True)
    trial_columns = [c for c in ("agent", "sample", "seed", "lr", "gamma", "n_steps", "ent_coef", "best_val_sharpe",
                                 "test_sharpe", "steps_per_s", "status") if c in trials.columns]  # fmt: skip
    report.add(
        "Allocation agents",
        f"PPO and SAC (stable-baselines3) trade the {len(env.features)} features {', '.join(env.features)} over a "
        f"{env.window}-day window of every asset, rebalancing every {env.rebalance_every} trading days at "
        f"{env.cost_bps:g} bps per unit of turnover; the reward is the log growth of the portfolio's value after "
        "costs. Each trial (one hyperparameter draw, one seed) is a Ray Tune trial that reports its validation "
        "Sharpe after costs with a checkpoint; the chosen checkpoint has the best validation Sharpe of all, and "
        "its deflated Sharpe counts every checkpoint as a try. A seed's luck is not skill: every trial's own "
        "best checkpoint is also walked through the test period, and the table gives the chosen draw's test "
        "Sharpe as mean +- sd over its seeds (a spread needs at least 5 seeds; the quickstart trains "
        + ", ".join(f"{a.upper()} {len(getattr(config.agents, a).seeds)}" for a in config.agents.algorithms)
        + " to keep its time; configs/full.yaml trains 5)."
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


def seed_spread(trials: pd.DataFrame, sample: int | None) -> str:
    """Test Sharpe as mean +- sd (n) over the seeds of draw ``sample`` (None: over every trial)."""
    if "test_sharpe" not in trials:
        return "n/a"
    rows = trials if sample is None else trials[trials["sample"] == sample]
    values = rows["test_sharpe"].dropna().to_numpy()
    if len(values) == 0:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f} (one seed: no spread)"
    return f"{values.mean():.2f} +- {values.std(ddof=1):.2f} (n={len(values)})"


def backtest_section(
    report: Report, result: BacktestResult, notes: tuple[str, ...], config: AllocationConfig, run_dir: Path
) -> None:
    """Add "Backtest (test period, after costs)": the protocol, a verdict per agent, the metrics, the plots."""
    env, bt = config.env, config.backtest
    metrics = result.metrics.rename(columns=COLUMNS).drop(columns="days")
    best = result.metrics.index[0]
    agents = [a for a in config.agents.algorithms if a in result.metrics.index]
    verdicts = []
    for agent in agents:
        m = result.metrics.loc[agent]
        rivals = result.metrics.drop(
            index=[n for n in result.metrics.index if n in agents or n == "tilt" or n.startswith(SERVED_PREFIX)]
        )  # the baselines only
        top = rivals.index[0]
        rival = rivals.iloc[0]["sharpe"]
        both = result.returns[[agent, top]].dropna()
        test = sharpe_difference(both[agent].to_numpy(), both[top].to_numpy())
        word = "beats" if test.p_greater < 0.05 else "trails" if test.p_less < 0.05 else "shows no evidence against"
        verdicts.append(
            f"**{agent.upper()}** Sharpe {m['sharpe']:.2f} (95% interval {m['sharpe_ci_low']:.2f} .. "
            f"{m['sharpe_ci_high']:.2f}) {word} the best baseline, {top} ({rival:.2f}; Ledoit-Wolf "
            f"p = {test.p_greater:.3f} that it is better); {against_equal_weight(m)}."
        )
    days = int(result.metrics["days"].iloc[0])
    first, last = result.returns.index[0].date(), result.returns.index[-1].date()
    report.add(
        "Backtest (test period, after costs)",
        f"Walk-forward on {first} .. {last} ({days} trading days): every strategy starts in cash, trades at the "
        f"close of the same rebalance dates (every {env.rebalance_every} trading days) seeing only data dated up "
        f"to that close, pays {env.cost_bps:g} bps per unit of turnover, and drifts with prices in between. "
        f"Estimators (minimum variance, maximum Sharpe, HRP; skfolio) refit at every rebalance on the previous "
        f"{bt.lookback} trading days. Sharpe: mean / std of daily net returns x sqrt({TRADING_DAYS_PER_YEAR}), no "
        f"risk-free rate; intervals from a stationary bootstrap ({bt.bootstrap_samples} resamples, mean block "
        f"{bt.bootstrap_block} days). Best Sharpe: **{best}**.",
        *verdicts,
        table(metrics, floatfmt=".3f"),
        *notes,
        *(image(p, run_dir, p.stem.replace("_", " ")) for p in result.plots),
        "Files: " + ", ".join(f"`{os.path.relpath(f, run_dir)}`" for f in result.files) + ".",
    )


def served_section(
    report: Report, result: BacktestResult, served: tuple[str, str] | None, config: AllocationConfig
) -> None:
    """The report's opening: what a client following rayfolio's recommendations would have earned,
    per risk profile, next to 1/N and the index, with the Sharpe's bootstrap interval. ``served``:
    the (allocator, version) the served path replayed; None: no served path to show."""
    m = result.metrics
    if served is None:
        return
    allocator, version = served
    rows = [n for n in m.index if n.startswith(SERVED_PREFIX)]
    shown = rows + [n for n in (BENCHMARK, INDEX, "tilt", *config.agents.algorithms) if n in m.index]
    frame = m.loc[shown, COMPARISON].rename(columns=COLUMNS)
    first, last = result.returns.index[0].date(), result.returns.index[-1].date()
    ew = m.loc[BENCHMARK, "sharpe"] if BENCHMARK in m.index else float("nan")
    lines = []
    for name in rows:
        row = m.loc[name]
        lines.append(
            f"**{name}**: Sharpe {row['sharpe']:.2f} ({row['sharpe_ci_low']:.2f} .. "
            f"{row['sharpe_ci_high']:.2f}), {row['annual_return']:.1%} a year, max drawdown "
            f"{row['max_drawdown']:.1%}; against 1/N's {ew:.2f}: {against_equal_weight(row)}."
        )
    report.add(
        "What a client following rayfolio's recommendations would have earned",
        f"The service's own decision path replayed through the test period ({first} .. {last}): at every "
        f"rebalance date (every {config.env.rebalance_every} trading days) the client sends its drifted weights "
        f"and a risk profile; the recommendation pipeline the HTTP service runs (ensemble forecasts -> "
        f"{allocator} {version} -> risk filters under the house limits) answers, and the client trades to the "
        f"target at {config.env.cost_bps:g} bps per unit of turnover. Risk tolerance per profile: "
        + ", ".join(f"{n} {t}" for n, t in config.backtest.served_profiles.items())
        + ".",
        *lines,
        table(frame, floatfmt=".3f"),
    )


def tilt_section(report: Report, stage: AllocationStage) -> None:
    """The forecast tilt around 1/N: its validation grid and the chosen (k, band)."""
    choice = stage.tilt
    if choice is None:
        return
    p = choice.params
    grid = choice.grid.rename(columns={"sharpe": "validation Sharpe", "turnover": "turnover (per year)"})
    report.add(
        "Forecast tilt around 1/N",
        f"w_i = (1/N)(1 + k z_i), clipped to [0, {p.cap:g}] and renormalised, z the ensemble's {choice.horizon}-day "
        f"z-score; trades smaller than the band are skipped. Chosen on validation by Sharpe after costs: "
        f"**k = {p.k:g}, band = {p.band:g}** (k = 0 is 1/N itself).",
        table(grid, floatfmt=".4g", index=False),
    )
