"""A tiny served market: untrained models registered the way the main job registers
them, a feature store of six synthetic assets, and the keys the tests and the serving
benchmarks use (tests import this from here; bench/ never imports tests/)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import torch

from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.rl.agents import rebuild_policy
from rayfolio.rl.config import EnvConfig
from rayfolio.rl.market import MarketData
from rayfolio.serving.audit import sqlite_url
from rayfolio.serving.builder import build_app
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.cards import AllocatorCard, Calendar, ForecasterCard, NormalizerParams, PolicyKwargs
from rayfolio.training.config import TrainConfig
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer, Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry

# 700 business days from 2000-01-03 end in September 2002.
SPLITS = SplitConfig(train_end=dt.date(2001, 6, 30), validation_start=dt.date(2001, 7, 1),
                     validation_end=dt.date(2001, 12, 31), test_start=dt.date(2002, 1, 1))  # fmt: skip
ENV = EnvConfig(window=10, rebalance_every=5)
# The tiny market as a run config (its splits, the environment its PPO is registered with, one served
# profile: the cheapest backtest that still replays the served path), for jobs that run on it.
RUN_CONFIG = {
    "name": "tiny",
    "data": {"source": "synthetic"},
    "splits": {k: str(v) for k, v in SPLITS.model_dump().items() if v is not None},
    "forecasters": {"families": ["lstm"], "search": {"num_samples": 1}},
    "allocation": {"env": {"window": ENV.window, "rebalance_every": ENV.rebalance_every},
                   "backtest": {"served_profiles": {"balanced": 0.5}, "bootstrap_samples": 100}},
}  # fmt: skip
USER, OTHER, ADMIN = "user-key-0123456789", "other-key-0123456789", "admin-key-0123456789"
BURSTY = "bursty-key-0123456789"  # spends its whole rate-limit burst in one test
CLIENTS = tuple(f"client-{i:02d}-key-0123456789" for i in range(64))  # one key per concurrent client
KEYS = ",".join([USER, OTHER, BURSTY, *CLIENTS, f"{ADMIN}:admin"])


def register_tiny_models(registry: ModelRegistry, store: FeatureStore, seed: int = 0) -> None:
    """A tiny LSTM forecaster and PPO allocator (untrained, weights from ``seed``): the first call
    registers production versions, a later one new versions (staging)."""
    panel = Panel.from_store(store)
    torch.manual_seed(seed)
    config = TrainConfig(family="lstm", hidden=8, window=10, layers=1)
    model = build_model("lstm", config.model_kwargs(len(panel.feature_names), len(panel.horizons)))
    normalizer = Normalizer.fit(panel.features[:400])
    metrics = {"by_split_and_horizon": [{"split": "validation", "horizon": h, "rank_ic": 0.02} for h in panel.horizons]}
    splitter = PurgedDateSplitter(SPLITS, purge=60)
    calendar = Calendar.of(store, splitter)
    card = ForecasterCard(train=config.model_copy(update={"graph_k": 2, "graph_lookback": 20, "graph_sector_k": 0}),
                          feature_names=panel.feature_names, horizons=panel.horizons,
                          normalizer=NormalizerParams.of(normalizer), symbols=tuple(panel.symbols.tolist()),
                          calendar=calendar)  # fmt: skip
    registry.register(card, {WEIGHTS: model.state_dict()}, metrics=metrics)
    market = MarketData.from_panel(panel, splitter, ENV)
    extractor = {"window": ENV.window, "n_assets": market.n_assets, "n_features": len(ENV.features), "embedding": 4}
    kwargs = {"net_arch": [16], "features_extractor_kwargs": extractor}
    policy = rebuild_policy("ppo", market, ENV, kwargs)
    agent = AllocatorCard(algorithm="ppo", policy_kwargs=PolicyKwargs.model_validate(kwargs, strict=False), env=ENV,
                          symbols=tuple(market.symbols.tolist()), feature_names=market.feature_names,
                          normalizer=NormalizerParams.of(market.normalizer), params={}, calendar=calendar)  # fmt: skip
    registry.register(agent, {WEIGHTS: policy.state_dict()}, metrics={"validation_sharpe": 0.5})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def tiny_settings(root: Path, **overrides) -> ServeSettings:
    """A store and a registry under ``root`` and the settings that serve them."""
    prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=8)), root / "store",
                          (5, 20, 60))  # fmt: skip
    register_tiny_models(ModelRegistry(root / "registry"), FeatureStore(root / "store"))
    return ServeSettings(store=root / "store", registry=root / "registry", splits=SPLITS,
                         audit_url=sqlite_url(root / "audit.db"), **overrides)  # fmt: skip


def serve_tiny(settings: ServeSettings, keys: str = KEYS) -> httpx.Client:
    """Serve ``settings`` on a free 127.0.0.1 port (the audit secret "audit-secret"); a client for it."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(settings, {"RAYFOLIO_API_KEYS": keys, "RAYFOLIO_AUDIT_KEY": "audit-secret"}), name="rayfolio",
              route_prefix="/")  # fmt: skip
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


def in_process_service(settings: ServeSettings, keys: str = KEYS):
    """The ingress's app without Serve: the same ``create_app`` and service, its deployments'
    classes running in this process (``LocalHandle``). Returns the FastAPI app."""
    from rayfolio.serving.api import create_app
    from rayfolio.serving.auth import load_api_keys
    from rayfolio.serving.deployments import Allocator, Ensemble, RiskFilter
    from rayfolio.serving.explainer import Explainer
    from rayfolio.serving.service import LocalHandle, RecommendationService

    plain = settings.model_dump(mode="json")
    handles = [LocalHandle(Ensemble(plain)), LocalHandle(Explainer(plain))]
    if settings.placement == "deployments":
        handles += [LocalHandle(Allocator(plain)), LocalHandle(RiskFilter(plain))]
    service = RecommendationService(settings, *handles)
    app = create_app(settings, service, load_api_keys({"RAYFOLIO_API_KEYS": keys}))
    app.state.service = service  # for tests that change it live (experiments)
    return app


def serve_in_thread(app) -> tuple[str, Callable[[], None]]:
    """``app`` under uvicorn on a free 127.0.0.1 port in a thread: its URL and a stop function."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://127.0.0.1:{port}", stop
