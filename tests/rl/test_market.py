"""MarketData: returns from the store, listing, k-day growth, forecast channels."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rayfolio.data.store import FeatureStoreError
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.market import MarketData
from tests.rl.conftest import SMALL_ENV, hand_market


def test_returns_come_from_the_stored_one_day_log_returns(small_panel, small_market):
    log_1 = small_panel.features[..., small_panel.feature_names.index("ret_1")]
    np.testing.assert_allclose(small_market.returns, np.nan_to_num(np.expm1(log_1.astype(np.float64))))
    splits = small_market.splits
    assert splits["train"][1] < splits["validation"][0] <= splits["validation"][1] < splits["test"][0]


def test_k_day_growth_compounds_the_daily_returns():
    returns = np.random.default_rng(0).normal(0, 0.02, (12, 2))
    g = hand_market(returns).growth(3)
    np.testing.assert_allclose(g[4, :2], np.prod(1 + returns[5:8], axis=0), rtol=1e-12)
    assert (g[:9, 2] == 1.0).all() and np.isnan(g[9:]).all()  # cash last; no holding past the end


def forecast_z(panel, market: MarketData, seed: int = 0) -> np.ndarray:
    """(T, N, H) ensemble z-scores from the validation split on (NaN before), as training/ensemble.py's z_panel."""
    z = np.full((len(panel.dates), len(panel.symbols), len(panel.horizons)), np.nan)
    first = market.splits["validation"][0]
    z[first:] = np.random.default_rng(seed).normal(size=z[first:].shape)
    return z


def test_forecast_features_add_a_channel_per_horizon_and_move_the_agents_into_validation(
    small_panel, small_splitter, small_market
):
    env = SMALL_ENV.model_copy(update={"forecast_features": True, "forecast_train_fraction": 0.5})
    z = forecast_z(small_panel, small_market)
    market = MarketData.from_panel(small_panel, small_splitter, env, forecast_z=z)
    assert market.feature_names == (*SMALL_ENV.features, "forecast_5d", "forecast_20d")
    a, b = small_market.splits["validation"]
    cut = a + round((b - a) * 0.5)
    assert market.splits == {"train": (a, cut), "validation": (cut + 1, b), "test": small_market.splits["test"]}
    # The channel is the ensemble at t, standardised with statistics of the agents' training dates only.
    expected = market.normalizer.transform(
        np.concatenate([small_panel.features[..., [small_panel.feature_names.index(f) for f in env.features]],
                        z.astype(np.float32)], axis=-1)
    )  # fmt: skip
    np.testing.assert_allclose(market.features, expected)
    train = PortfolioEnv(market, env, market.splits["train"])
    check_env(train, skip_render_check=True)
    for seed in range(10):
        assert train.reset(seed=seed)[1]["date_index"] >= a  # episodes start where forecasts exist


def test_forecast_features_without_forecasts_are_refused(small_panel, small_splitter):
    env = SMALL_ENV.model_copy(update={"forecast_features": True})
    with pytest.raises(FeatureStoreError, match="no forecaster ensemble"):
        MarketData.from_panel(small_panel, small_splitter, env)


def test_unknown_environment_features_are_named(small_panel, small_splitter):
    with pytest.raises(FeatureStoreError, match=r"\['rsi_99'\] are not in the feature store"):
        MarketData.from_panel(small_panel, small_splitter, SMALL_ENV.model_copy(update={"features": ("rsi_99",)}))
