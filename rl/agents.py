"""SB3 PPO and SAC allocation agents: policy, training, evaluation, loading.

The policy reads every asset's feature window through one shared embedding
(``AssetWindowExtractor``, passed in ``policy_kwargs``), so its size does not
grow with window x assets x features, and the same pattern is learnt for every
asset. Rewards are normalised by SB3's ``VecNormalize`` wrapper (daily log
growth is ~1e-3, too small a signal for the default learning rates).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn

from rayfolio.rl.backtest import StrategyRun, rebalance_dates, simulate
from rayfolio.rl.config import Algorithm, AlgorithmSearch, EnvConfig
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.market import MarketData

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}


class AssetWindowExtractor(BaseFeaturesExtractor):
    """(B, W*N*F + N+1) -> (B, N*E + N+1): each asset's (W, F) window through one
    shared linear embedding of width E, then the current weights unchanged."""

    def __init__(self, observation_space: gym.spaces.Box, window: int, n_assets: int, n_features: int, embedding: int):
        super().__init__(observation_space, n_assets * embedding + n_assets + 1)
        self.window, self.n_assets, self.n_features = window, n_assets, n_features
        self.embed = nn.Sequential(nn.Linear(window * n_features, embedding), nn.Tanh())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        b, split = observations.shape[0], self.window * self.n_assets * self.n_features
        windows = observations[:, :split].reshape(b, self.window, self.n_assets, self.n_features)
        per_asset = windows.permute(0, 2, 1, 3).reshape(b, self.n_assets, self.window * self.n_features)  # (B, N, W*F)
        return torch.cat([self.embed(per_asset).reshape(b, -1), observations[:, split:]], dim=1)


def policy_kwargs(market: MarketData, env: EnvConfig, search: AlgorithmSearch) -> dict:
    """Plain values only: they are stored in the registry to rebuild the policy."""
    return {
        "net_arch": list(search.net_arch),
        "features_extractor_kwargs": {
            "window": env.window,
            "n_assets": market.n_assets,
            "n_features": len(market.feature_names),
            "embedding": search.asset_embedding,
        },
    }


class RewardNormalize(VecNormalize):
    """``VecNormalize`` for rewards only: observations pass through untouched. SB3's deep-copies them
    even with ``norm_obs=False``, and a replay batch passes through it: at 400 assets two copies of
    256 x 48,401 floats (100 MB) per gradient step that change nothing."""

    def normalize_obs(self, obs):
        return obs

    def unnormalize_obs(self, obs):
        return obs


class BatchReplayBuffer(ReplayBuffer):
    """SB3's replay buffer, its sampled batches handed to torch without another copy: every array
    ``_get_samples`` converts is freshly gathered, so ``as_tensor`` shares nothing with the buffer.
    At hundreds of assets a batch is ~50 MB, past the CPU's cache: each copy saved is time."""

    def to_torch(self, array: np.ndarray, copy: bool = True) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)


class BatchRolloutBuffer(RolloutBuffer):
    """PPO's rollout buffer, its minibatches (fresh gathers too) handed to torch without a copy."""

    def to_torch(self, array: np.ndarray, copy: bool = True) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)


def _sb3_kwargs(kwargs: dict) -> dict:
    return {**kwargs, "features_extractor_class": AssetWindowExtractor}


def training_env(market: MarketData, env: EnvConfig, n_envs: int, gamma: float) -> RewardNormalize:
    period = market.splits["train"]
    envs = DummyVecEnv([lambda: Monitor(PortfolioEnv(market, env, period)) for _ in range(n_envs)])
    return RewardNormalize(envs, norm_obs=False, norm_reward=True, gamma=gamma, clip_reward=10.0)


def build_agent(
    algorithm: Algorithm, params: dict, market: MarketData, env: EnvConfig, search: AlgorithmSearch, seed: int
) -> BaseAlgorithm:
    """An untrained agent on vectorised training-period environments."""
    vec = training_env(market, env, search.n_envs, params["gamma"])
    common = {
        "learning_rate": params["lr"],
        "gamma": params["gamma"],
        "policy_kwargs": _sb3_kwargs(policy_kwargs(market, env, search)),
        "seed": seed,
        "device": "cpu",
        "verbose": 0,
    }
    if algorithm == "ppo":
        return PPO(
            "MlpPolicy",
            vec,
            n_steps=params["n_steps"],
            batch_size=search.batch_size,
            n_epochs=search.n_epochs,
            ent_coef=params["ent_coef"],
            rollout_buffer_class=BatchRolloutBuffer,
            **common,
        )
    return SAC(
        "MlpPolicy",
        vec,
        buffer_size=search.buffer_size,
        replay_buffer_class=BatchReplayBuffer,
        batch_size=search.batch_size,
        learning_starts=search.learning_starts,
        gradient_steps=search.gradient_steps,
        **common,
    )


def rebuild_policy(algorithm: Algorithm, market: MarketData, env: EnvConfig, kwargs: dict) -> BasePolicy:
    """The policy network alone (no replay buffer, no optimiser state), ready for a state_dict."""
    probe = PortfolioEnv(market, env, market.splits["test"], random_start=False)
    policy_class = ALGORITHMS[algorithm].policy_aliases["MlpPolicy"]
    policy = policy_class(probe.observation_space, probe.action_space, lambda _: 0.0, **_sb3_kwargs(kwargs))
    policy.set_training_mode(False)
    return policy


class AgentAllocator:
    """A trained policy as a backtest allocator: the environment's observation
    and action maps at each rebalance date, deterministic actions."""

    def __init__(self, name: str, policy: BasePolicy, market: MarketData, env: EnvConfig, period: tuple[int, int]):
        self.name, self.policy = name, policy
        self.env = PortfolioEnv(market, env, period, random_start=False)

    def decide(self, t: int, weights: np.ndarray) -> np.ndarray:
        action, _ = self.policy.predict(self.env.observation(t, weights), deterministic=True)
        return self.env.target_weights(action, t)

    def decide_many(self, ts: list[int], weights: list[np.ndarray]) -> list[np.ndarray]:
        """Several (date, current weights) decisions in one forward pass of the policy."""
        observations = np.stack([self.env.observation(t, w) for t, w in zip(ts, weights, strict=True)])  # (B, D)
        actions, _ = self.policy.predict(observations, deterministic=True)  # (B, N+1)
        return [self.env.target_weights(a, t) for a, t in zip(actions, ts, strict=True)]


def evaluate_agent(
    name: str, policy: BasePolicy, market: MarketData, env: EnvConfig, period: tuple[int, int]
) -> StrategyRun:
    """The policy's walk through ``period`` on the rebalance calendar, after costs."""
    allocator = AgentAllocator(name, policy, market, env, period)
    first = max(period[0], env.window - 1)
    decisions = rebalance_dates(first, period[1], env.rebalance_every)
    return simulate(allocator, market.returns, market.dates, market.symbols, decisions, period[1], env.cost_bps)
