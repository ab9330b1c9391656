"""The allocation stage of the main job: search PPO and SAC on Ray Tune,
register the chosen agents, and backtest them against the baselines on the
test period (touched once, here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rayfolio.data.schema import Location, PanelValidationError
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore
from rayfolio.rl.agents import AgentAllocator
from rayfolio.rl.backtest import Allocator, StrategyRun, rebalance_dates, run_backtest, simulate
from rayfolio.rl.baselines import (
    BuyAndHold,
    EqualWeight,
    EstimatorAllocator,
    TopKForecast,
    hierarchical_risk_parity,
    maximum_sharpe,
    minimum_variance,
)
from rayfolio.rl.config import AllocationConfig, EnvConfig
from rayfolio.rl.load import load_agent
from rayfolio.rl.market import MarketData, ensemble_forecasts
from rayfolio.rl.report import BacktestResult, write_backtest
from rayfolio.rl.search import AgentSearchOutcome, search_agents
from rayfolio.training.cards import (
    ALLOCATOR_KINDS,
    AllocatorCard,
    Calendar,
    NormalizerParams,
    PolicyKwargs,
    allocator_name,
)
from rayfolio.training.panel import Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry, RegistryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AllocationStage:
    backtest: BacktestResult
    searches: dict[str, AgentSearchOutcome]
    registered: dict[str, tuple[str, str]]  # model name -> (version, stage)
    notes: tuple[str, ...]


def run_allocation(
    store: FeatureStore,
    splitter: PurgedDateSplitter,
    config: AllocationConfig,
    run_dir: Path,
    registry: ModelRegistry,
    *,
    source: str,
    forecasts_path: Path | None,
) -> AllocationStage:
    panel = Panel.from_store(store)
    forecasts = read_forecasts(forecasts_path)
    market = MarketData.from_panel(panel, splitter, config.env, forecasts=forecasts)
    searches = {}
    for algorithm in config.agents.algorithms:
        search = getattr(config.agents, algorithm)
        logger.info(
            "searching %s: %d draws x %d seeds, %s steps each, on Ray Tune",
            algorithm,
            search.num_samples,
            len(search.seeds),
            f"{search.timesteps:,}",
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
        allocator_name(algorithm): register_agent(registry, calendar, market, config.env, outcome)
        for algorithm, outcome in searches.items()
    }
    agents = [
        AgentAllocator(algorithm, o.policy, market, config.env, market.splits["test"])
        for algorithm, o in searches.items()
    ]
    result, notes = backtest(market, config, agents, source=source, forecasts=forecasts, out=run_dir)
    return AllocationStage(result, searches, registered, notes)


def backtest(
    market: MarketData,
    config: AllocationConfig,
    agents: list[Allocator],
    *,
    source: str,
    forecasts: pd.DataFrame | None,
    out: Path,
) -> tuple[BacktestResult, tuple[str, ...]]:
    """Agents and every baseline over the test period, one calendar, one cost model."""
    env, bt = config.env, config.backtest
    k = env.rebalance_every
    notes = []
    estimators: list[EstimatorAllocator] = [
        minimum_variance(market, k, bt.lookback),
        maximum_sharpe(market, k, bt.lookback),
        hierarchical_risk_parity(market, k, bt.lookback),
    ]
    allocators: list[Allocator] = [*agents, EqualWeight(market, k), *estimators]
    signal = forecast_signal(forecasts, market, k)
    if signal is None:
        notes.append("No forecaster forecasts for the test period: the forecast-driven top-k portfolio is left out.")
    else:
        scores, description = signal
        allocators.append(TopKForecast(market, scores, bt.top_k, k))
        notes.append(f"forecast_top_k: equal weight in the top {bt.top_k} assets by {description}.")
    period = market.splits["test"]
    runs = run_backtest(allocators, market, period, k, env.cost_bps)
    index = index_run(bt.index, source, market, period, k, env.cost_bps)
    if index is not None:
        runs[index.name] = index
        notes.append("index_buy_hold: the S&P 500 index bought on the first test day (paying the cost) and held.")
    for e in estimators:
        if e.failures:
            notes.append(
                f"{e.name}: {len(e.failures)} refits failed and kept the previous weights (first: {e.failures[0]})."
            )
    return write_backtest(runs, bt, out), tuple(notes)


def read_forecasts(path: Path | None) -> pd.DataFrame | None:
    """``forecasts.parquet`` rows (validation and test), or None when there is no such file."""
    return pd.read_parquet(path) if path is not None and Path(path).is_file() else None


def forecast_signal(
    forecasts: pd.DataFrame | None, market: MarketData, horizon_days: int
) -> tuple[np.ndarray, str] | None:
    """(T, N) scores for the top-k portfolio: the networks' ensemble forecast at the
    label horizon nearest the rebalance period, on test dates."""
    if forecasts is None:
        return None
    ensemble, horizons, networks = ensemble_forecasts(forecasts[forecasts["split"] == "test"], market.dates,
                                                      market.symbols)  # fmt: skip
    if not networks:
        return None
    j = min(range(len(horizons)), key=lambda i: (abs(horizons[i] - horizon_days), horizons[i]))
    return ensemble[..., j], f"the mean z-scored {horizons[j]}-day forecast of {', '.join(networks)}"


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
    registry: ModelRegistry, calendar: Calendar, market: MarketData, env: EnvConfig, outcome: AgentSearchOutcome
) -> tuple[str, str]:
    """The chosen policy's state_dict (never an SB3 .zip: that is pickled code) with
    the card that rebuilds it; stage auto (production if the model has none yet, else staging)."""
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
    )
    return version.version, registry.stage_of(version)


def best_allocator(registry: ModelRegistry) -> str:
    """The production allocator (a trained policy or the forecast tilt) with the best validation Sharpe."""
    candidates = [
        (v.metrics.get("validation_sharpe", float("-inf")), v.name) for v in registry.production(ALLOCATOR_KINDS)
    ]
    if not candidates:
        raise RegistryError(f"no production allocator in {registry.root}: run `rayfolio run` first")
    return max(candidates)[1]


def load_agents(
    registry: ModelRegistry,
    panel: Panel,
    splitter: PurgedDateSplitter,
    config: AllocationConfig,
    forecasts: pd.DataFrame | None = None,
) -> tuple[list[AgentAllocator], list[str]]:
    """The production allocators of ``config``'s algorithms, for the backtest."""
    agents, notes = [], []
    for algorithm in config.agents.algorithms:
        name = allocator_name(algorithm)
        if registry.stage_version(name, "production") is None:
            notes.append(f"{name}: no production version in {registry.root}; left out.")
            continue
        agent, version = load_agent(registry, name, panel, splitter, forecasts)
        env = agent.env.config
        if env.rebalance_every != config.env.rebalance_every or env.cost_bps != config.env.cost_bps:
            raise RegistryError(
                f"{name} {version} was trained to rebalance every {env.rebalance_every} days at "
                f"{env.cost_bps} bps; this backtest uses {config.env.rebalance_every} days at {config.env.cost_bps} bps"
            )
        agents.append(agent)
        notes.append(f"{algorithm}: {name} {version} (production) from {registry.root}.")
    return agents, notes
