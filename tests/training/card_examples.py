"""Small valid cards for the registry tests: a forecaster and an allocator of
four features, two horizons and three symbols."""

from __future__ import annotations

import datetime as dt

from rayfolio.data.splits import SplitConfig
from rayfolio.rl.config import EnvConfig
from rayfolio.training.cards import (
    AllocatorCard,
    Calendar,
    ExtractorKwargs,
    ForecasterCard,
    NormalizerParams,
    PolicyKwargs,
)
from rayfolio.training.config import TrainConfig

FEATURES = ("ret_1", "ret_5", "vol_20", "rsi_14")
CALENDAR = Calendar(
    start=dt.date(2000, 1, 3),
    end=dt.date(2002, 9, 30),
    splits=SplitConfig(
        train_end=dt.date(2001, 9, 30),
        validation_start=dt.date(2001, 10, 1),
        validation_end=dt.date(2002, 2, 28),
        test_start=dt.date(2002, 3, 1),
    ),
    purge=20,
    feature_store_sha256="ab" * 32,
)
NORMALIZER = NormalizerParams(lower=(-1.0,) * 4, upper=(1.0,) * 4, mean=(0.0,) * 4, std=(0.5,) * 4)


def forecaster_card(**train) -> ForecasterCard:
    return ForecasterCard(
        train=TrainConfig(family="lstm", hidden=8, window=5, **train),
        feature_names=FEATURES,
        horizons=(5, 20),
        normalizer=NORMALIZER,
        symbols=("AAA", "BBB", "CCC"),
        calendar=CALENDAR,
    )


def allocator_card() -> AllocatorCard:
    env = EnvConfig(features=FEATURES, window=10, rebalance_every=5)
    return AllocatorCard(
        algorithm="ppo",
        env=env,
        policy_kwargs=PolicyKwargs(
            net_arch=(16,), features_extractor_kwargs=ExtractorKwargs(window=10, n_assets=3, n_features=4, embedding=4)
        ),
        params={"lr": 3e-4, "gamma": 0.99, "n_steps": 128, "seed": 0},
        feature_names=FEATURES,
        normalizer=NORMALIZER,
        symbols=("AAA", "BBB", "CCC"),
        calendar=CALENDAR,
    )
