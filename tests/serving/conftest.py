"""A small market with untrained tiny models: everything a recommendation
needs, built in-process without Ray or a registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bench.tiny_market import ENV, SPLITS
from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.rl.agents import AgentAllocator, rebuild_policy
from rayfolio.rl.market import MarketData
from rayfolio.serving.allocator import AgentProposer
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.market import Market
from rayfolio.serving.pipeline import LocalDecisions, LocalForecasts, RecommendationPipeline
from rayfolio.serving.risk import HouseLimits
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import ForecastEnsemble, Forecaster
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer, Panel

__all__ = ["ENV", "SPLITS", "TinyModels", "make_engine", "make_panel"]


def make_panel(last_day: int | None = None) -> Panel:
    """Six synthetic assets over 700 days; ``last_day`` drops every row after that day index."""
    frame = build_features_local(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=8)), (5, 20, 60))
    if last_day is not None:
        frame = frame[frame["date"] <= np.sort(frame["date"].unique())[last_day]]
    return Panel.from_frame(frame, tuple(f.name for f in FEATURES if f.name in frame.columns), (5, 20, 60))


@dataclass
class TinyModels:
    """Untrained tiny models over a panel, and the recommendation pipeline that serves them in-process."""

    panel: Panel
    ensemble: ForecastEnsemble
    allocator: AgentAllocator
    audit: AuditLog
    pipeline: RecommendationPipeline

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.pipeline.market.symbols

    def recommend(self, request, key: str, idempotency_key: str | None = None):
        import asyncio

        return asyncio.run(self.pipeline.recommend(request, key, idempotency_key))


def make_engine(panel: Panel, audit_path, limits: HouseLimits | None = None) -> TinyModels:
    """Deterministic untrained models; normalisers fitted on the first 400 days (a fixed 'training split')."""
    splitter = PurgedDateSplitter(SPLITS, purge=60)
    forecasters = []
    for seed, (family, ic) in enumerate((("lstm", [0.02, 0.03, 0.01]), ("gat", [0.01, 0.04, -0.01]))):
        torch.manual_seed(seed)
        config = TrainConfig(family=family, hidden=8, window=10, layers=1)
        model = build_model(family, config.model_kwargs(len(panel.feature_names), 3)).eval()
        scaled = Normalizer.fit(panel.features[:400]).transform(panel.features)
        graph = np.tile(np.arange(2), (len(panel.dates), len(panel.symbols), 1))
        forecasters.append(Forecaster(f"{family}-forecaster", "v0001", (model,), 10, scaled, graph, panel.horizons,
                                      np.array(ic)))  # fmt: skip
    normalizer = Normalizer.fit(panel.features[:400][..., [panel.feature_names.index(f) for f in ENV.features]])
    market_data = MarketData.from_panel(panel, splitter, ENV, normalizer)
    torch.manual_seed(0)
    extractor = {"window": 10, "n_assets": market_data.n_assets, "n_features": len(ENV.features), "embedding": 4}
    kwargs = {"net_arch": [16], "features_extractor_kwargs": extractor}
    policy = rebuild_policy("ppo", market_data, ENV, kwargs)
    allocator = AgentAllocator("ppo", policy, market_data, ENV, (0, len(market_data.dates) - 1))
    versions = {"lstm-forecaster": "v0001", "gat-forecaster": "v0001", "ppo-allocator": "v0001"}
    audit = AuditLog(sqlite_url(audit_path), secret=b"test")
    ensemble = ForecastEnsemble(forecasters, panel, np.arange(400, 500))  # confidence calibrated on "validation"
    market = Market(panel, max(ensemble.min_history, allocator.env.window))
    pipeline = RecommendationPipeline(market, LocalForecasts(ensemble), LocalDecisions(AgentProposer(allocator), market,
                                      limits or HouseLimits()), audit, versions)  # fmt: skip
    return TinyModels(panel, ensemble, allocator, audit, pipeline)


@pytest.fixture(scope="module")
def panel() -> Panel:
    return make_panel()


# ----- the audit log's two backends -----------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the session (tests/serving/postgres.py), stopped by PID."""
    from tests.serving import postgres

    bindir = postgres.find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres): install Debian's `postgresql` package "
                    "(.ci/run does)")  # fmt: skip
    server = postgres.start(bindir)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_urls(request, tmp_path) -> Iterator[Callable[[], str]]:
    """Each call: the URL of a new, empty audit database on the test's backend."""
    server = request.getfixturevalue("postgres_server") if request.param == "postgresql" else None
    made: list[str] = []

    def new() -> str:
        made.append(server.create_database() if server else sqlite_url(tmp_path / f"audit-{len(made)}.db"))
        return server.url(made[-1]) if server else made[-1]

    yield new
    for database in made if server else ():
        server.drop_database(database)
