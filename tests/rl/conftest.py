"""Markets for the allocation tests: a small synthetic one built without Ray,
and hand-made ones whose every return is known."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.rl.config import EnvConfig
from rayfolio.rl.market import MarketData
from rayfolio.training.panel import Normalizer, Panel

# 600 business days from 2000-01-03 end in April 2002.
SMALL_SPLITS = SplitConfig(
    train_end=dt.date(2001, 3, 31),
    validation_start=dt.date(2001, 4, 1),
    validation_end=dt.date(2001, 9, 30),
    test_start=dt.date(2001, 10, 1),
)
SMALL_ENV = EnvConfig(window=10, rebalance_every=5, episode_steps=8)


@pytest.fixture(scope="session")
def small_panel() -> Panel:
    frame = build_features_local(SyntheticSource(SyntheticPanelConfig(n_assets=5, n_days=600, seed=11)), (5, 20))
    names = tuple(f.name for f in FEATURES if f.name in frame.columns)
    return Panel.from_frame(frame, names, (5, 20))


@pytest.fixture(scope="session")
def small_splitter() -> PurgedDateSplitter:
    return PurgedDateSplitter(SMALL_SPLITS, purge=20)


@pytest.fixture(scope="session")
def small_market(small_panel, small_splitter) -> MarketData:
    return MarketData.from_panel(small_panel, small_splitter, SMALL_ENV)


def hand_market(returns: np.ndarray, n_features: int = 2, seed: int = 0, first=None, last=None) -> MarketData:
    """A market with the given (T, N) daily returns and random features; every date is train."""
    t, n = returns.shape
    features = np.random.default_rng(seed).normal(size=(t, n, n_features)).astype(np.float32)
    return MarketData(
        dates=np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-01") + t).astype("datetime64[D]"),
        symbols=np.array([f"A{i}" for i in range(n)]),
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        returns=returns.astype(np.float64),
        features=features,
        first=np.zeros(n, dtype=int) if first is None else np.asarray(first),
        last=np.full(n, t - 1) if last is None else np.asarray(last),
        normalizer=Normalizer(*(np.zeros(n_features),) * 3, np.ones(n_features)),
        splits={"train": (0, t - 1), "validation": (0, t - 1), "test": (0, t - 1)},
    )


@pytest.fixture(scope="session")
def small_store(tmp_path_factory, ray_session):
    """The small market's prices as a feature store on Ray Data (for the registry's hashes)."""
    from rayfolio.data.store import FeatureStore, prepare_feature_store

    out = tmp_path_factory.mktemp("rl") / "store"
    prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=5, n_days=600, seed=11)), out, (5, 20))
    return FeatureStore(out)
