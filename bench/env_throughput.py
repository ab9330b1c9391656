"""PortfolioEnv and SB3 PPO throughput on the embedded data (20 assets).

Prints:
- env steps/s with uniform random actions over full episodes (window 60, one
  step per trading day), against a reference measured in the same run: the
  same environment with its two numba kernels replaced by the equivalent numpy
  calls;
- PPO training steps/s for 20k steps on one core (the process pinned to CPU 0,
  one torch thread) with rayfolio's agent (shared per-asset embedding,
  4 vectorised envs), and SB3's default PPO ("MlpPolicy", one env) on the same
  environment as the reference.

    python -m bench.env_throughput [--window 60] [--ppo-steps 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import time

import numpy as np
import torch

from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import sp500_source
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.rl.agents import build_agent
from rayfolio.rl.config import AlgorithmSearch, EnvConfig
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.market import MarketData
from rayfolio.training.panel import Panel


class NumpyStepEnv(PortfolioEnv):
    """The reference: identical arithmetic in plain numpy calls."""

    def target_weights(self, action, t):
        weights = np.maximum(action, 0.0, dtype=np.float64) * self._tradable[t]
        total = weights.sum()
        return weights / total if total > 0 else self._cash()

    def step(self, action):
        t = self._t
        target = self.target_weights(action, t)
        turnover = float(np.abs(target[:-1] - self._weights[:-1]).sum())
        held = target * self._growth[t]
        gross = float(held.sum())
        net = (1.0 - self._cost * turnover) * gross
        self._weights = held / gross
        self._value *= net
        self._t = t + self.k
        self._steps += 1
        truncated = self._t > self.last_decision
        info = {"date_index": t, "turnover": turnover, "net_growth": net}
        return self.observation(self._t, self._weights), math.log(net), False, truncated, info


def market(window: int) -> MarketData:
    frame = build_features_local(sp500_source(), (5, 20, 60))
    names = tuple(f.name for f in FEATURES if f.name in frame.columns)
    panel = Panel.from_frame(frame, names, (5, 20, 60))
    splits = SplitConfig(train_end=dt.date(2014, 12, 31), validation_start=dt.date(2015, 1, 1),
                         validation_end=dt.date(2016, 12, 31), test_start=dt.date(2017, 1, 1))  # fmt: skip
    return MarketData.from_panel(panel, PurgedDateSplitter(splits, purge=60), EnvConfig(window=window))


def env_steps_per_s(env: PortfolioEnv, steps: int, seed: int = 0) -> float:
    actions = np.random.default_rng(seed).uniform(-1, 1, (4096, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    done = 0
    started = time.perf_counter()
    while done < steps:
        _, _, terminated, truncated, _ = env.step(actions[done & 4095])
        done += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - started)


def ppo_steps_per_s(m: MarketData, env_config: EnvConfig, steps: int, *, default_sb3: bool) -> float:
    if default_sb3:
        from stable_baselines3 import PPO

        agent = PPO("MlpPolicy", PortfolioEnv(m, env_config, m.splits["train"]), device="cpu", seed=0, verbose=0)
    else:
        params = {"lr": 3e-4, "gamma": 0.99, "n_steps": 256, "ent_coef": 0.0}
        agent = build_agent("ppo", params, m, env_config, AlgorithmSearch(), seed=0)
    started = time.perf_counter()
    agent.learn(steps)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--env-steps", type=int, default=300_000)
    parser.add_argument("--ppo-steps", type=int, default=20_000)
    parser.add_argument("--skip-default-ppo", action="store_true", help="skip SB3's default PPO reference (slow)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # one core for everything below
    torch.set_num_threads(1)
    m = market(args.window)
    config = EnvConfig(window=args.window, rebalance_every=1)
    full = (0, len(m.dates) - 1)
    print(f"embedded data: {m.n_assets} assets, {len(m.dates)} days, {len(m.feature_names)} features, "
          f"window {args.window}; one core")  # fmt: skip
    for run in range(2):
        ours = env_steps_per_s(PortfolioEnv(m, config, full, random_start=False), args.env_steps, seed=run)
        reference = env_steps_per_s(NumpyStepEnv(m, config, full, random_start=False), args.env_steps, seed=run)
        print(f"env steps/s   run {run + 1}: PortfolioEnv {ours:,.0f}  numpy-step reference {reference:,.0f}  "
              f"ratio {ours / reference:.2f}x  (target >= 100,000)")  # fmt: skip
    ours = ppo_steps_per_s(m, config, args.ppo_steps, default_sb3=False)
    line = f"PPO steps/s ({args.ppo_steps:,} steps): rayfolio agent {ours:,.0f}  (target >= 1,500)"
    if not args.skip_default_ppo:
        reference = ppo_steps_per_s(m, config, args.ppo_steps, default_sb3=True)
        line += f"  SB3 default MlpPolicy {reference:,.0f}  ratio {ours / reference:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
