"""The allocation stage of the main job: search PPO and SAC on Ray Tune, choose the
forecast tilt around 1/N on validation, register them, pick the allocator to serve by
validation Sharpe after costs, and backtest everything against the baselines on the
test period (touched once, here), the service's own decision path first."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import ray

from rayfolio.data.schema import Location, PanelValidationError
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore
from rayfolio.rl.agents import AgentAllocator
from rayfolio.rl.backtest import Allocator, StrategyRun, rebalance_dates, run_backtest, simulate
from rayfolio.rl.baselines import (
    BuyAndHold,
    EqualWeight,
    TopKForecast,
)
from rayfolio.rl.config import AllocationConfig, EnvConfig, TiltParams, observation_floats
from rayfolio.rl.estimator_runs import finish_estimators, start_estimators
from rayfolio.rl.load import best_allocator, best_by_validation, load_agent
from rayfolio.rl.market import MarketData
from rayfolio.rl.report import BacktestResult, write_backtest
from rayfolio.rl.search import AgentSearchOutcome, search_agents
from rayfolio.rl.tilt import TiltAllocator, choose_tilt, load_tilt, register_tilt
from rayfolio.training.cards import (
    ALLOCATOR_KINDS,
    TILT_NAME,
    AllocatorCard,
    Calendar,
    NormalizerParams,
    PolicyKwargs,
    TiltCard,
    allocator_name,
)
from rayfolio.training.ensemble import ForecastEnsemble, forecast_dates
from rayfolio.training.panel import Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry, RegistryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TiltChoice:
    params: TiltParams
    grid: pd.DataFrame  # k, band, validation Sharpe, turnover per grid point
    horizon: int  # the forecast horizon whose z it reads


@dataclass(frozen=True)
class AllocationStage:
    backtest: BacktestResult
    searches: dict[str, AgentSearchOutcome]
    registered: dict[str, tuple[str, str]]  # model name -> (version, stage)
    tilt: TiltChoice | None
    served: tuple[str, str] | None  # (allocator, version) the served-path strategies replayed
    notes: tuple[str, ...]


# (allocator name, version) -> the served-path strategies and notes on them (cluster/ builds them:
# they run the service's own pipeline, which lives above rl/ in the layout).
ServedFactory = Callable[[str, str], tuple[list[Allocator], list[str]]]


def signal_horizon(horizons: tuple[int, ...], holding_days: int) -> int:
    """The label horizon nearest the holding period (ties: the shorter)."""
    return min(horizons, key=lambda h: (abs(h - holding_days), h))


def run_allocation(
    store: FeatureStore,
    splitter: PurgedDateSplitter,
    config: AllocationConfig,
    run_dir: Path,
    registry: ModelRegistry,
    *,
    source: str,
    ensemble: ForecastEnsemble | None,
    served: ServedFactory | None = None,
    stage: Literal["auto", "staging"] = "auto",
) -> AllocationStage:
    """Search and register the agents, choose and register the forecast tilt, pick the allocator to
    serve by validation Sharpe, and backtest them all (with the served path) on the test period.
    ``stage``: where the agents and the tilt are registered ("staging": a retraining for review)."""
    panel = Panel.from_store(store)
    forecast_z = ensemble.z_panel(forecast_dates(panel, splitter)) if ensemble is not None else None
    market = MarketData.from_panel(panel, splitter, config.env,
                                   forecast_z=forecast_z if config.env.forecast_features else None)  # fmt: skip
    searches = {}
    for algorithm in config.agents.algorithms:
        search = getattr(config.agents, algorithm)
        # The steps at this universe's size (search_agents applies the same rule to the trials).
        floats = observation_floats(config.env, market.n_assets, len(market.feature_names))
        steps = search.at_scale(algorithm, floats, market.n_assets).timesteps
        logger.info(
            "searching %s: %d draws x %d seeds, %s steps each%s, on Ray Tune",
            algorithm,
            search.num_samples,
            len(search.seeds),
            f"{steps:,}",
            f" (asset_steps cap at {market.n_assets:,} assets; configured {search.timesteps:,})"
            if steps < search.timesteps
            else "",
        )
        searches[algorithm] = search_agents(
            market,
            algorithm,
            config.env,
            search,
            cpus_per_trial=config.agents.cpus_per_trial,
            max_concurrent=config.agents.max_concurrent_trials,
            storage=run_dir / "tune",
            seed=config.backtest.seed,
        )
        o = searches[algorithm]
        logger.info("%s: best validation Sharpe %.2f, deflated Sharpe %.2f", algorithm, o.val_sharpe,
                    o.deflated_sharpe)  # fmt: skip
    calendar = Calendar.of(store, splitter)
    registered = {
        allocator_name(algorithm): register_agent(registry, calendar, market, config.env, outcome, stage)
        for algorithm, outcome in searches.items()
    }
    validation_sharpe = {allocator_name(a): o.val_sharpe for a, o in searches.items()}
    agents = [
        AgentAllocator(algorithm, o.policy, market, config.env, market.splits["test"])
        for algorithm, o in searches.items()
    ]
    k = config.env.rebalance_every
    tilt, tilt_choice, notes = None, None, []
    if forecast_z is not None:
        horizon = signal_horizon(panel.horizons, k)
        z = forecast_z[..., panel.horizons.index(horizon)]
        params, grid = choose_tilt(market, z, market.splits["validation"], k, config.env.cost_bps, config.tilt)
        tilt_choice = TiltChoice(params, grid, horizon)
        best = float(grid[(grid.k == params.k) & (grid.band == params.band)]["sharpe"].iloc[0])
        card = TiltCard(params=params, horizon=horizon, rebalance_every=k, cost_bps=config.env.cost_bps,
                        forecasters={f.name: f.version for f in ensemble.forecasters},
                        symbols=tuple(market.symbols.tolist()), calendar=calendar)  # fmt: skip
        registered[TILT_NAME] = register_tilt(registry, card, {"validation_sharpe": best,
                                                               "grid": grid.to_dict("records")}, stage)  # fmt: skip
        validation_sharpe[TILT_NAME] = best
        tilt = TiltAllocator(market, z, params, k)
        logger.info("tilt: k %.2f, band %.3f chosen on validation (Sharpe %.2f)", params.k, params.band, best)
    chosen = best_by_validation(validation_sharpe) if validation_sharpe else None
    strategies: list[Allocator] = []
    if served is not None and chosen is not None:
        strategies, served_notes = served(chosen, registered[chosen][0])
        notes += served_notes
    signal = (tilt.z, tilt.horizon) if tilt else None
    result, backtest_notes = backtest(market, config, agents + ([tilt] if tilt else []), source=source,
                                      signal=signal, served=strategies, out=run_dir)  # fmt: skip
    return AllocationStage(result, searches, registered, tilt_choice,
                           (chosen, registered[chosen][0]) if strategies else None,
                           (*notes, *backtest_notes))  # fmt: skip


def backtest(
    market: MarketData,
    config: AllocationConfig,
    allocators: list[Allocator],
    *,
    source: str,
    signal: tuple[np.ndarray, int] | None,
    served: list[Allocator] = (),
    out: Path,
) -> tuple[BacktestResult, tuple[str, ...]]:
    """The served path, the agents and tilt, and every baseline over the test period: one calendar,
    one cost model. ``signal``: the ensemble's (T, N) z-scores and their horizon, for the forecast
    top-k portfolio."""
    env, bt = config.env, config.backtest
    k = env.rebalance_every
    notes = []
    period = market.splits["test"]
    # The estimator baselines (the costly ones: a refit per rebalance) start first, as Ray tasks when
    # Ray is up, and run while this process backtests the rest.
    pending = start_estimators(market, k, bt.lookback, period, env.cost_bps, on_ray=ray.is_initialized())
    allocators = [*served, *allocators, EqualWeight(market, k)]
    if signal is None:
        notes.append("No forecaster ensemble: the forecast-driven portfolios (tilt, top-k) are left out.")
    else:
        scores, horizon = signal
        allocators.append(TopKForecast(market, scores, bt.top_k, k))
        notes.append(f"forecast_top_k: equal weight in the top {bt.top_k} assets by the ensemble's {horizon}-day "
                     "z-score (the signal the tilt and the service read).")  # fmt: skip
    runs = run_backtest(allocators, market, period, k, env.cost_bps)
    estimators = finish_estimators(pending)
    names = [a.name for a in allocators]  # the estimators after equal weight, as they always were
    at = names.index(EqualWeight.name) + 1
    runs = {n: runs[n] if n in runs else estimators.runs[n] for n in [*names[:at], *estimators.runs, *names[at:]]}
    index = index_run(bt.index, source, market, period, k, env.cost_bps)
    if index is not None:
        runs[index.name] = index
        notes.append("index_buy_hold: the S&P 500 index bought on the first test day (paying the cost) and held.")
    notes.append(estimators.note())
    for name, failures in estimators.failures.items():
        if failures:
            notes.append(f"{name}: {len(failures)} refits failed and kept the previous weights (first: {failures[0]}).")
    return write_backtest(runs, bt, out), tuple(notes)


def index_returns(spec: str | None, source: str, market: MarketData) -> np.ndarray | None:
    """(T,) daily simple returns of the benchmark index on the market's dates, or None.
    A user's index file that cannot serve is refused by name (``PanelValidationError``)."""
    if spec is None or (spec == "auto" and source != "sp500"):
        return None
    if spec in ("auto", "sp500"):
        from skfolio.datasets import load_sp500_index

        prices = load_sp500_index().iloc[:, 0]
    else:
        prices = _read_index_file(Path(spec))
    dates = pd.DatetimeIndex(market.dates)
    aligned = prices.sort_index().reindex(prices.index.union(dates)).ffill().reindex(dates)
    return aligned.pct_change().to_numpy()


def _read_index_file(path: Path) -> pd.Series:
    """Index levels by date from a CSV or Parquet file of two columns, ``date`` and the level."""
    where = Location(str(path))
    if not path.is_file():
        raise PanelValidationError(where, "no such index file (backtest.index)")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise PanelValidationError(where, f"cannot read the index file: {err}") from None
    if "date" not in frame.columns or frame.shape[1] != 2:
        raise PanelValidationError(where, "an index file has two columns, 'date' and the index level")
    try:
        dates = pd.to_datetime(frame["date"])
        levels = pd.to_numeric(frame.drop(columns="date").iloc[:, 0])
    except (ValueError, TypeError) as err:
        raise PanelValidationError(where, f"dates and index levels must parse: {err}") from None
    if (levels <= 0).any() or levels.isna().any():
        raise PanelValidationError(where, "index levels must be positive numbers")
    return pd.Series(levels.to_numpy(dtype=float), index=pd.DatetimeIndex(dates))


def index_run(
    spec: str | None, source: str, market: MarketData, period: tuple[int, int], every: int, cost_bps: float
) -> StrategyRun | None:
    returns = index_returns(spec, source, market)
    if returns is None:
        return None
    if not np.isfinite(returns[period[0] + 1 : period[1] + 1]).all():
        first, last = market.dates[period[0]], market.dates[period[1]]
        raise PanelValidationError(
            Location(str(spec)), f"the index does not cover the whole test period ({first} .. {last})"
        )
    decisions = rebalance_dates(period[0], period[1], every)
    return simulate(BuyAndHold(), returns[:, None], market.dates, np.array(["INDEX"]), decisions, period[1], cost_bps)


# ----- registry ---------------------------------------------------------------------------------


def register_agent(
    registry: ModelRegistry,
    calendar: Calendar,
    market: MarketData,
    env: EnvConfig,
    outcome: AgentSearchOutcome,
    stage: Literal["auto", "staging"] = "auto",
) -> tuple[str, str]:
    """The chosen policy's state_dict (never an SB3 .zip: that is pickled code) with the card that
    rebuilds it; stage auto (production if the model has none yet, else staging) or staging."""
    card = AllocatorCard(
        algorithm=outcome.algorithm,
        env=env,
        policy_kwargs=PolicyKwargs.model_validate(outcome.policy_kwargs, strict=False),
        params=outcome.params,
        feature_names=market.feature_names,
        normalizer=NormalizerParams.of(market.normalizer),
        symbols=tuple(market.symbols.tolist()),
        calendar=calendar,
    )
    version = registry.register(
        card,
        {WEIGHTS: outcome.policy.state_dict()},
        metrics={
            "validation_sharpe": outcome.val_sharpe,
            "deflated_sharpe": outcome.deflated_sharpe,
            "timesteps": outcome.timesteps,
            "trials": outcome.trials.replace({np.nan: None}).to_dict("records"),
        },
        stage=stage,
    )
    return version.version, registry.stage_of(version)


def backtest_production(
    registry: ModelRegistry,
    panel: Panel,
    splitter: PurgedDateSplitter,
    config: AllocationConfig,
    *,
    source: str,
    ensemble: ForecastEnsemble | None,
    served: ServedFactory | None,
    out: Path,
) -> tuple[BacktestResult, tuple[str, ...], tuple[str, str] | None]:
    """``rayfolio backtest``: the production versions (what ``rayfolio serve`` serves: agents, the tilt
    and the served path of the best of them) against the baselines. Returns the result, notes, and the
    (allocator, version) the served path replayed."""
    forecast_z = ensemble.z_panel(forecast_dates(panel, splitter)) if ensemble is not None else None
    agents, notes = load_agents(registry, panel, splitter, config, forecast_z)
    market = MarketData.from_panel(panel, splitter, config.env,
                                   forecast_z=forecast_z if config.env.forecast_features else None)  # fmt: skip
    allocators: list[Allocator] = list(agents)
    signal = None
    if forecast_z is not None:
        horizon = signal_horizon(panel.horizons, config.env.rebalance_every)
        tilt_version = registry.stage_version(TILT_NAME, "production")
        if tilt_version is not None:
            card = load_tilt(registry)
            horizon = card.horizon
            z = forecast_z[..., panel.horizons.index(horizon)]
            allocators.append(TiltAllocator(market, z, card.params, config.env.rebalance_every))
            notes.append(f"tilt: {TILT_NAME} {tilt_version} (production) from {registry.root}.")
        signal = (forecast_z[..., panel.horizons.index(horizon)], horizon)
    chosen, strategies = None, []
    if served is not None and registry.production(ALLOCATOR_KINDS):
        name = best_allocator(registry)
        chosen = (name, registry.stage_version(name, "production"))
        strategies, served_notes = served(*chosen)
        notes += served_notes
    result, more = backtest(market, config, allocators, source=source, signal=signal, served=strategies, out=out)
    return result, (*notes, *more), chosen if strategies else None


def load_agents(
    registry: ModelRegistry,
    panel: Panel,
    splitter: PurgedDateSplitter,
    config: AllocationConfig,
    forecast_z: np.ndarray | None = None,
) -> tuple[list[AgentAllocator], list[str]]:
    """The production allocators of ``config``'s algorithms, for the backtest. ``forecast_z``: the
    ensemble's (T, N, H) z-scores, for agents that read them."""
    agents, notes = [], []
    for algorithm in config.agents.algorithms:
        name = allocator_name(algorithm)
        if registry.stage_version(name, "production") is None:
            notes.append(f"{name}: no production version in {registry.root}; left out.")
            continue
        agent, version = load_agent(registry, name, panel, splitter, forecast_z)
        env = agent.env.config
        if env.rebalance_every != config.env.rebalance_every or env.cost_bps != config.env.cost_bps:
            raise RegistryError(
                f"{name} {version} was trained to rebalance every {env.rebalance_every} days at "
                f"{env.cost_bps} bps; this backtest uses {config.env.rebalance_every} days at {config.env.cost_bps} bps"
            )
        agents.append(agent)
        notes.append(f"{algorithm}: {name} {version} (production) from {registry.root}.")
    return agents, notes
