"""A small market with untrained tiny models: everything a recommendation
needs, built in-process without Ray or a registry."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.rl.agents import AgentAllocator, rebuild_policy
from rayfolio.rl.config import EnvConfig
from rayfolio.rl.market import MarketData
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.engine import RecommendationEngine
from rayfolio.serving.risk import HouseLimits
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import ForecastEnsemble, Forecaster
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer, Panel

# 700 business days from 2000-01-03 end in September 2002.
SPLITS = SplitConfig(train_end=dt.date(2001, 6, 30), validation_start=dt.date(2001, 7, 1),
                     validation_end=dt.date(2001, 12, 31), test_start=dt.date(2002, 1, 1))  # fmt: skip
ENV = EnvConfig(window=10, rebalance_every=5)


def make_panel(last_day: int | None = None) -> Panel:
    """Six synthetic assets over 700 days; ``last_day`` drops every row after that day index."""
    frame = build_features_local(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=8)), (5, 20, 60))
    if last_day is not None:
        frame = frame[frame["date"] <= np.sort(frame["date"].unique())[last_day]]
    return Panel.from_frame(frame, tuple(f.name for f in FEATURES if f.name in frame.columns), (5, 20, 60))


def make_engine(panel: Panel, audit_path, limits: HouseLimits | None = None) -> RecommendationEngine:
    """Deterministic untrained models; normalisers fitted on the first 400 days (a fixed 'training split')."""
    splitter = PurgedDateSplitter(SPLITS, purge=60)
    forecasters = []
    for seed, (family, ic) in enumerate((("lstm", [0.02, 0.03, 0.01]), ("gat", [0.01, 0.04, -0.01]))):
        torch.manual_seed(seed)
        config = TrainConfig(family=family, hidden=8, window=10, layers=1)
        model = build_model(family, config.model_kwargs(len(panel.feature_names), 3)).eval()
        scaled = Normalizer.fit(panel.features[:400]).transform(panel.features)
        graph = np.tile(np.arange(2), (len(panel.dates), len(panel.symbols), 1))
        forecasters.append(Forecaster(f"{family}-forecaster", "v0001", model, 10, scaled, graph, panel.horizons,
                                      np.array(ic)))  # fmt: skip
    normalizer = Normalizer.fit(panel.features[:400][..., [panel.feature_names.index(f) for f in ENV.features]])
    market = MarketData.from_panel(panel, splitter, ENV, normalizer)
    torch.manual_seed(0)
    extractor = {"window": 10, "n_assets": market.n_assets, "n_features": len(ENV.features), "embedding": 4}
    kwargs = {"net_arch": [16], "features_extractor_kwargs": extractor}
    policy = rebuild_policy("ppo", market, ENV, kwargs)
    allocator = AgentAllocator("ppo", policy, market, ENV, (0, len(market.dates) - 1))
    versions = {"lstm-forecaster": "v0001", "gat-forecaster": "v0001", "ppo-allocator": "v0001"}
    audit = AuditLog(sqlite_url(audit_path), secret=b"test")
    ensemble = ForecastEnsemble(forecasters, panel)
    return RecommendationEngine(panel, ensemble, allocator, limits or HouseLimits(), audit, versions)


@pytest.fixture(scope="module")
def panel() -> Panel:
    return make_panel()
