"""The allocator step of a recommendation: a registered allocator's proposal, before the risk
filters. Two kinds are servable (``allocator:`` in the serve config):

- an agent (``ppo-allocator``, ``sac-allocator``): the policy's deterministic action at the date;
- the forecast tilt (``tilt-allocator``): 1/N tilted by the ensemble's z-scores at the date,
  with its no-trade band against the client's current weights (rl/tilt.py).

``best`` serves the production allocator with the best validation Sharpe after costs, the same
rule the main job uses to pick what it replays. A proposer sees the request's date, the
client's current weights and the ensemble's forecast for that date, and nothing later.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.rl.load import best_allocator, load_agent
from rayfolio.rl.market import MarketData, tradable_at
from rayfolio.rl.tilt import propose  # the one tilt implementation, the backtest's too
from rayfolio.training.cards import AllocatorCard, TiltCard
from rayfolio.training.ensemble import EnsembleForecast, ForecastEnsemble, forecast_dates, load_forecasters
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError

BEST = "best"


class Proposer(Protocol):
    min_history: int  # date indices before min_history - 1 cannot be decided

    def propose_many(
        self, ts: list[int], currents: list[np.ndarray], forecasts: list[EnsembleForecast]
    ) -> list[np.ndarray]:
        """(date, current weights (N+1,), forecast) -> proposed target weights (N+1,), cash last."""


class AgentProposer:
    """A policy: one forward pass for the batch."""

    def __init__(self, agent) -> None:
        self.agent, self.min_history = agent, agent.env.window

    def propose_many(self, ts, currents, forecasts) -> list[np.ndarray]:
        return self.agent.decide_many(ts, currents)


class TiltProposer:
    """The forecast tilt around 1/N on the ensemble's z at the card's horizon."""

    def __init__(self, card: TiltCard, panel: Panel) -> None:
        self.card, self.min_history = card, 1
        self.h = panel.horizons.index(card.horizon)
        self.first, self.last = MarketData.listing(panel)
        self.n_dates = len(panel.dates)

    def propose_many(self, ts, currents, forecasts) -> list[np.ndarray]:
        out = []
        for t, current, forecast in zip(ts, currents, forecasts, strict=True):
            tradable = tradable_at(self.first, self.last, self.n_dates, t, self.card.rebalance_every)
            out.append(propose(forecast.z[:, self.h], tradable, current, self.card.params))
        return out


def resolve_allocator(registry: ModelRegistry, name: str) -> str:
    """``best``: the production allocator with the best validation Sharpe; any other name as given."""
    return best_allocator(registry) if name == BEST else name


def load_proposer(
    registry: ModelRegistry,
    name: str,
    panel: Panel,
    splits: SplitConfig,
    *,
    version: str | None = None,
    ensemble: ForecastEnsemble | None = None,
) -> tuple[Proposer, dict[str, str]]:
    """A registered allocator (production, or ``version``) as a proposer, verified; and {name: version}.
    ``ensemble``: for an agent that reads forecast features (else built from the production forecasters)."""
    name = resolve_allocator(registry, name)
    chosen = registry.get(name, version) if version else registry.get(name, stage="production")
    card = chosen.card
    if isinstance(card, TiltCard):
        if card.symbols != tuple(str(s) for s in panel.symbols):
            raise RegistryError(f"{name} {chosen.version} was fitted on other symbols than this store's")
        return TiltProposer(card, panel), {name: chosen.version}
    if not isinstance(card, AllocatorCard):
        raise RegistryError(f"{name} {chosen.version} is {card.kind!r}, not an allocator")
    splitter = PurgedDateSplitter(splits, purge=max(panel.horizons))
    forecast_z = None
    if card.env.forecast_features:
        if ensemble is None:
            ensemble = ForecastEnsemble(load_forecasters(registry, panel), panel)
        forecast_z = ensemble.z_panel(forecast_dates(panel, splitter))
    agent, v = load_agent(registry, name, panel, splitter, forecast_z, version=chosen.version, whole_panel=True)
    return AgentProposer(agent), {name: v}
