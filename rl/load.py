"""A production allocator from the registry, on a market built with its own stored
features and normaliser, and the rule that picks the allocator to serve. Its own module:
a serving replica imports this, not the backtest, the search and the report."""

from __future__ import annotations

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.rl.agents import AgentAllocator, rebuild_policy
from rayfolio.rl.market import MarketData
from rayfolio.training.cards import ALLOCATOR_KINDS, AllocatorCard
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError


def load_agent(
    registry: ModelRegistry,
    name: str,
    panel: Panel,
    splitter: PurgedDateSplitter,
    forecast_z: np.ndarray | None = None,
    *,
    version: str | None = None,
    whole_panel: bool = False,
) -> tuple[AgentAllocator, str]:
    """``name``'s production allocator (or ``version``) on a market built with its own stored
    features and normaliser, checksums verified and card validated before any weight is read;
    and its version. ``forecast_z``: the forecaster ensemble's (T, N, H) z-scores, for an agent
    that reads them. ``whole_panel``: it may decide on any date (serving), not only test dates."""
    version = registry.get(name, version) if version else registry.get(name, stage="production")
    card = version.card
    if not isinstance(card, AllocatorCard):
        raise RegistryError(f"{name} {version.version} is {card.kind!r}, not an allocator")
    env = card.env
    market = MarketData.from_panel(panel, splitter, env, card.normalizer.normalizer(), forecast_z=forecast_z)
    if market.feature_names != card.feature_names:
        raise RegistryError(
            f"{name} {version.version} reads {list(card.feature_names)}; this market has {list(market.feature_names)}"
        )
    if tuple(market.symbols.tolist()) != card.symbols:
        raise RegistryError(
            f"{name} {version.version} was trained on {list(card.symbols)}; this store has {market.symbols.tolist()}"
        )
    policy = rebuild_policy(card.algorithm, market, env, card.policy_kwargs.as_sb3())
    policy.load_state_dict(registry.load_weights(version))
    period = (0, len(market.dates) - 1) if whole_panel else market.splits["test"]
    return AgentAllocator(card.algorithm, policy, market, env, period), version.version


def best_by_validation(validation_sharpe: dict[str, float]) -> str:
    """The rule that picks the allocator to serve: the best validation Sharpe after costs (ties: the
    later name). The main job applies it to what it registered, ``best_allocator`` to production."""
    return max(validation_sharpe, key=lambda name: (validation_sharpe[name], name))


def best_allocator(registry: ModelRegistry) -> str:
    """The production allocator (a trained policy or the forecast tilt) with the best validation Sharpe."""
    candidates = {
        v.name: v.metrics.get("validation_sharpe", float("-inf")) for v in registry.production(ALLOCATOR_KINDS)
    }
    if not candidates:
        raise RegistryError(f"no production allocator in {registry.root}: run `rayfolio run` first")
    return best_by_validation(candidates)
