"""A small feature store and training data shared by the training tests."""

from __future__ import annotations

import datetime as dt

import pytest

from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.panel import Panel

# 700 business days from 2000-01-03 end in September 2002.
TINY_SPLITS = SplitConfig(
    train_end=dt.date(2001, 9, 30),
    validation_start=dt.date(2001, 10, 1),
    validation_end=dt.date(2002, 2, 28),
    test_start=dt.date(2002, 3, 1),
)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, ray_session) -> FeatureStore:
    out = tmp_path_factory.mktemp("training") / "store"
    prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=8, n_days=700, seed=3)), out, (5, 20))
    return FeatureStore(out)


@pytest.fixture(scope="session")
def tiny_panel(tiny_store) -> Panel:
    return Panel.from_store(tiny_store)


@pytest.fixture(scope="session")
def tiny_splitter() -> PurgedDateSplitter:
    return PurgedDateSplitter(TINY_SPLITS, purge=20)
