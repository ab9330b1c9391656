"""Budgets that depend on the universe's size (AlgorithmSearch.at_scale), the rows the report prints,
and the weights plot's bands: what stays bounded when the assets number in the hundreds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rayfolio.data.conventions import CASH
from rayfolio.rl.agents import _sb3_kwargs, build_agent, policy_kwargs
from rayfolio.rl.config import FLOAT_BYTES, AlgorithmSearch, AllocationConfig, budget_rows, observation_floats
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.report import OTHER, weight_bands
from tests.rl.conftest import SMALL_ENV

QUICKSTART = AllocationConfig.model_validate(
    yaml.safe_load((Path(__file__).parents[2] / "configs" / "quickstart.yaml").read_text())["allocation"]
)
AT_400 = observation_floats(QUICKSTART.env, 400, len(QUICKSTART.env.features))


def test_observation_size_at_400_assets():
    # 20 days x 400 assets x 6 features, then 400 weights and cash: the 48,401 floats.
    assert AT_400 == 48_401


def test_the_replay_buffer_holds_no_more_than_a_trial_fills():
    sac = QUICKSTART.agents.sac.model_copy(update={"asset_steps": None})
    assert sac.buffer_size == 50_000 and sac.timesteps == 6_000
    assert sac.at_scale("sac", AT_400, 400).buffer_size == 6_000
    small = sac.model_copy(update={"buffer_size": 1_000})
    assert small.at_scale("sac", AT_400, 400) is small  # already within both caps: the same search


def test_sac_steps_shrink_above_the_asset_steps_budget():
    sac = AlgorithmSearch(timesteps=6_000, asset_steps=600_000, learning_starts=500, evaluations=3)
    assert sac.at_scale("sac", AT_400, 100).timesteps == 6_000  # 6,000 x 100 is the budget itself
    at_400 = sac.at_scale("sac", AT_400, 400)
    assert (at_400.timesteps, at_400.buffer_size) == (1_500, 1_500)  # the buffer follows the steps
    assert sac.at_scale("sac", AT_400, 10_000).timesteps == 503  # never below learning_starts + evaluations
    assert AlgorithmSearch(timesteps=6_000).at_scale("ppo", AT_400, 10_000).timesteps == 6_000  # no budget, no cap


def test_the_replay_buffer_is_capped_by_memory():
    sac = AlgorithmSearch(timesteps=100_000, buffer_size=100_000, memory_gb=1.0)
    scaled = sac.at_scale("sac", AT_400, 400)
    per_transition = 2 * AT_400 * FLOAT_BYTES
    assert scaled.buffer_size == 1_000_000_000 // per_transition == 2_582
    assert scaled.buffer_bytes("sac", AT_400) <= 1e9 < (scaled.buffer_size + 1) * per_transition


def test_a_memory_budget_below_one_batch_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^sac: memory_gb 0.01 holds 12 transitions .* fewer than batch_size 256"):
        AlgorithmSearch(memory_gb=0.01).at_scale("sac", 100_001, 400)


def test_ppo_rollouts_are_capped_by_memory_keeping_the_grid_order():
    ppo = AlgorithmSearch(n_steps=(512, 64, 2048), n_envs=4, memory_gb=1.0)
    cap = int(1e9 // (2 * 4 * AT_400 * FLOAT_BYTES))  # 645 steps of 4 observations, twice
    assert ppo.at_scale("ppo", AT_400, 400).n_steps == (512, 64, cap)
    assert QUICKSTART.agents.ppo.at_scale("ppo", AT_400, 400) is QUICKSTART.agents.ppo  # 128/256 fit


def test_the_replay_buffer_sb3_allocates_is_what_the_trial_declares(small_market):
    # An independent count: the arrays SB3 allocates for the capped buffer.
    floats = observation_floats(SMALL_ENV, small_market.n_assets, len(small_market.feature_names))
    search = AlgorithmSearch(timesteps=40, buffer_size=10_000, n_envs=2, batch_size=8, net_arch=(8,),
                             asset_embedding=2).at_scale("sac", floats, small_market.n_assets)  # fmt: skip
    agent = build_agent("sac", {"lr": 1e-3, "gamma": 0.9}, small_market, SMALL_ENV, search, seed=0)
    buffer = agent.replay_buffer
    assert buffer.observations.shape == (20, 2, floats)  # 40 transitions over 2 envs
    assert buffer.observations.nbytes + buffer.next_observations.nbytes == search.buffer_bytes("sac", floats)


def test_sac_without_the_batch_copies_learns_exactly_what_stock_sb3_does(small_market):
    # rl/agents.py drops copies that change nothing (VecNormalize's deep copy of observations it does not
    # normalise, the buffer's second copy into torch): the same seed must give bit-identical networks.
    search = AlgorithmSearch(timesteps=48, buffer_size=48, n_envs=2, batch_size=8, learning_starts=16,
                             net_arch=(8,), asset_embedding=2)  # fmt: skip
    params = {"lr": 1e-3, "gamma": 0.9}
    # Each built and trained in turn: SB3 seeds the global RNGs when an agent is built.
    ours = build_agent("sac", params, small_market, SMALL_ENV, search, seed=3)
    ours.learn(48)
    period = small_market.splits["train"]
    envs = DummyVecEnv([lambda: Monitor(PortfolioEnv(small_market, SMALL_ENV, period)) for _ in range(2)])
    stock = SAC("MlpPolicy", VecNormalize(envs, norm_obs=False, norm_reward=True, gamma=0.9, clip_reward=10.0),
                learning_rate=1e-3, gamma=0.9, seed=3, device="cpu", buffer_size=48, batch_size=8, learning_starts=16,
                policy_kwargs=_sb3_kwargs(policy_kwargs(small_market, SMALL_ENV, search)))  # fmt: skip
    assert type(stock.replay_buffer) is not type(ours.replay_buffer)
    stock.learn(48)
    trained, reference = ours.policy.state_dict(), stock.policy.state_dict()
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[k], reference[k]) for k in trained)
    untrained = build_agent("sac", params, small_market, SMALL_ENV, search, seed=3).policy.state_dict()
    assert not torch.equal(trained["actor.mu.weight"], untrained["actor.mu.weight"])  # it did learn


def test_ppo_without_the_minibatch_copy_learns_exactly_what_stock_sb3_does(small_market):
    search = AlgorithmSearch(n_envs=2, batch_size=16, n_epochs=2, net_arch=(8,), asset_embedding=2)
    params = {"lr": 1e-3, "gamma": 0.9, "n_steps": 32, "ent_coef": 0.0}
    ours = build_agent("ppo", params, small_market, SMALL_ENV, search, seed=3)
    ours.learn(64)
    period = small_market.splits["train"]
    envs = DummyVecEnv([lambda: Monitor(PortfolioEnv(small_market, SMALL_ENV, period)) for _ in range(2)])
    stock = PPO("MlpPolicy", VecNormalize(envs, norm_obs=False, norm_reward=True, gamma=0.9, clip_reward=10.0),
                learning_rate=1e-3, gamma=0.9, seed=3, device="cpu", n_steps=32, batch_size=16, n_epochs=2,
                ent_coef=0.0, policy_kwargs=_sb3_kwargs(policy_kwargs(small_market, SMALL_ENV, search)))  # fmt: skip
    assert type(stock.rollout_buffer) is not type(ours.rollout_buffer)
    stock.learn(64)
    trained, reference = ours.policy.state_dict(), stock.policy.state_dict()
    assert trained.keys() == reference.keys()
    assert all(torch.equal(trained[k], reference[k]) for k in trained)


def test_budget_rows_say_what_was_capped_and_why():
    rows = budget_rows(QUICKSTART, 400)
    assert rows["SAC replay buffer"] == (
        "1,500 transitions, 0.58 GB (capped by the 1,500 steps a trial takes; configured 50,000; "
        "observation 48,401 floats at 400 assets)"
    )
    assert rows["PPO rollout buffer"].startswith("n_steps 128/256 x 4 envs, at most 0.40 GB (as configured;")
    assert rows["SAC steps per trial"] == "1,500 (capped by asset_steps 600,000 / 400 assets; configured 6,000)"
    assert budget_rows(QUICKSTART, 100)["SAC steps per trial"] == "6,000 (as configured; capped above 100 assets)"
    assert budget_rows(QUICKSTART, 400)["PPO steps per trial"] == "20,000 (as configured, at every universe size)"
    # Forecast channels widen the observation: the caller passes the market's feature count.
    assert "56,401 floats" in budget_rows(QUICKSTART, 400, n_features=7)["SAC replay buffer"]


def test_weight_bands_keep_the_largest_holdings_and_sum_the_rest():
    rng = np.random.default_rng(0)
    dates = pd.date_range("2020-01-01", periods=6, freq="MS")
    columns = [f"A{i}" for i in range(30)] + [CASH]
    weights = pd.DataFrame(rng.dirichlet(np.ones(31), size=6), index=dates, columns=columns)
    weights.iloc[:, 0] -= 0.01  # a short: counted as 0, as the plot always did
    bands = weight_bands(weights, k=4)
    held = weights.clip(lower=0)
    expected_top = held.drop(columns=CASH).mean().nlargest(4).index.tolist()
    assert bands.columns.tolist() == [*expected_top, OTHER, CASH]
    np.testing.assert_allclose(bands.sum(axis=1), held.sum(axis=1))
    rest = [c for c in columns[:-1] if c not in expected_top]
    np.testing.assert_allclose(bands[OTHER], held[rest].sum(axis=1))
    few = weights.iloc[:, [0, 1, 2, 3, 4, -1]]  # 5 assets, k = 4: an "other" of one asset is just that asset
    pd.testing.assert_frame_equal(weight_bands(few, k=4), few.clip(lower=0))
