"""The service's own decision path as a backtest strategy: what a client following rayfolio's
recommendations would have earned.

At each rebalance date the client sends the service its drifted weights and a risk profile; the
``RecommendationPipeline`` (the object the ingress calls: ensemble forecasts -> allocator
proposal -> risk filters under the house limits -> target weights, audited) answers, and the
client trades to the target at the backtest's cost. The request is the JSON request a client
would send, so the HTTP service and the replay decide from the same numbers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayfolio.data.conventions import CASH
from rayfolio.serving.allocator import load_proposer
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.market import Market
from rayfolio.serving.pipeline import LocalDecisions, LocalForecasts, RecommendationPipeline
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.schemas import RecommendationRequest, RiskProfileIn
from rayfolio.training.ensemble import ForecastEnsemble
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry

REPLAY_KEY = "backtest-replay"  # the audit's key id of every replayed recommendation


def served_name(profile: str) -> str:
    return f"served_{profile}"


def portfolio_of(symbols: tuple[str, ...], weights: np.ndarray) -> dict[str, float]:
    """A client's current weights (N+1,), cash last, as the request's ``portfolio``: the risky positions held."""
    return {s: float(w) for s, w in zip(symbols, weights[:-1], strict=True) if w > 0}


def weights_of(symbols: tuple[str, ...], target: dict[str, float]) -> np.ndarray:
    """A response's ``target_weights`` as (N+1,), cash last."""
    index = {s: i for i, s in enumerate(symbols)}
    out = np.zeros(len(symbols) + 1)
    for symbol, weight in target.items():
        out[-1 if symbol == CASH else index[symbol]] = weight
    return out


def replay_request(market: Market, t: int, weights: np.ndarray, profile: RiskProfileIn) -> RecommendationRequest:
    """The request a client holding ``weights`` at the close of date index ``t`` sends."""
    body = {"portfolio": portfolio_of(market.symbols, weights), "as_of": str(market.dates[t]),
            "risk_profile": profile.model_dump()}  # fmt: skip
    return RecommendationRequest.model_validate(body)


@dataclass
class ServedStrategy:
    """A backtest allocator (rl/backtest.py) that asks the recommendation pipeline."""

    name: str
    pipeline: RecommendationPipeline
    profile: RiskProfileIn

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray:
        market = self.pipeline.market
        response = asyncio.run(self.pipeline.recommend(replay_request(market, t, weights, self.profile), REPLAY_KEY))
        return weights_of(market.symbols, response.target_weights)


def replay_pipeline(
    registry: ModelRegistry,
    panel: Panel,
    ensemble: ForecastEnsemble,
    allocator: str,
    limits: HouseLimits,
    audit_path: Path,
    *,
    splits,
    allocator_version: str | None = None,
) -> RecommendationPipeline:
    """The pipeline the ingress builds (placement "ingress"), in this process: ``ensemble`` (calibrated
    on validation), the registered ``allocator`` (``best``, a name, and optionally a version) and
    ``limits``; every recommendation audited in ``audit_path``."""
    proposer, versions = load_proposer(registry, allocator, panel, splits, version=allocator_version,
                                       ensemble=ensemble)  # fmt: skip
    market = Market(panel, max(ensemble.min_history, proposer.min_history))
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    versions = {f.name: f.version for f in ensemble.forecasters} | versions
    return RecommendationPipeline(market, LocalForecasts(ensemble, cache_size=4096),
                                  LocalDecisions(proposer, market, limits), AuditLog(sqlite_url(audit_path)),
                                  versions)  # fmt: skip


def served_strategies(pipeline: RecommendationPipeline, profiles: dict[str, float]) -> list[ServedStrategy]:
    """One strategy per named risk profile (name -> risk tolerance; other fields the request's defaults)."""
    return [ServedStrategy(served_name(name), pipeline, RiskProfileIn(risk_tolerance=tolerance))
            for name, tolerance in profiles.items()]  # fmt: skip
