"""Per-step cost of the allocation agents as the universe grows (single process, one torch thread).

For each number of assets N: a random market of 2,520 days with the quickstart's environment (window 20,
6 features, monthly steps) and agents (net_arch 64x64, embedding 8, 4 vectorised envs, batch 256), and
the mean time of: one environment step (observation included), one observation alone, a replay-buffer
sample of 256, one SAC gradient step (buffer sample, actor + twin critics forward/backward), one SAC
rollout step (policy forward on 4 observations, 4 env steps, buffer add), one PPO rollout step and one
PPO minibatch gradient step. The ratio column is the time at the largest N over the smallest: linear
growth is N_max / N_min.

    python -m bench.agent_scale [--assets 100 400] [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rayfolio.rl.agents import build_agent
from rayfolio.rl.config import AgentsConfig, EnvConfig
from rayfolio.rl.env import PortfolioEnv
from rayfolio.rl.market import MarketData
from rayfolio.training.panel import Normalizer

DAYS, FEATURES = 2_520, 6


def random_market(n_assets: int, seed: int = 0) -> MarketData:
    rng = np.random.default_rng(seed)
    return MarketData(
        dates=np.arange(np.datetime64("2000-01-03"), np.datetime64("2000-01-03") + DAYS).astype("datetime64[D]"),
        symbols=np.array([f"A{i}" for i in range(n_assets)]),
        feature_names=tuple(f"f{i}" for i in range(FEATURES)),
        returns=rng.normal(3e-4, 0.01, (DAYS, n_assets)),
        features=rng.normal(size=(DAYS, n_assets, FEATURES)).astype(np.float32),
        first=np.zeros(n_assets, dtype=int),
        last=np.full(n_assets, DAYS - 1),
        normalizer=Normalizer(*(np.zeros(FEATURES),) * 3, np.ones(FEATURES)),
        splits={"train": (0, 1_700), "validation": (1_701, 2_100), "test": (2_101, DAYS - 1)},
    )


def per_call(fn, repeats: int) -> float:
    fn()  # warm-up (numba, torch allocator)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def measure(n_assets: int, steps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    market, env_config, agents = random_market(n_assets), EnvConfig(), AgentsConfig()
    env = PortfolioEnv(market, env_config, market.splits["train"])
    obs, _ = env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, n_assets + 1).astype(np.float32)

    def env_step():
        if env.step(action)[3]:
            env.reset()

    out = {
        "observation floats": float(obs.size),
        "env step (ms)": per_call(env_step, steps * 4) * 1e3,
        "observation (ms)": per_call(lambda: env.observation(env.first_decision, env._cash()), steps * 4) * 1e3,
    }
    params = {"lr": 3e-4, "gamma": 0.99, "n_steps": 128, "ent_coef": 0.0}
    # Buffer: just what the gradient steps sample from (the budget rule caps the real one).
    sac_search = agents.sac.model_copy(update={"buffer_size": 2_000, "learning_starts": 0})
    sac = build_agent("sac", params, market, env_config, sac_search, seed=0)
    sac.learn(600)  # fills 600 transitions, 150 rollout steps of 4 envs, with gradient steps
    out["buffer sample 256 (ms)"] = per_call(lambda: sac.replay_buffer.sample(256, sac._vec_normalize_env), steps) * 1e3
    out["SAC gradient step (ms)"] = per_call(lambda: sac.train(gradient_steps=1, batch_size=256), steps) * 1e3
    sac.learning_starts = 10**9  # rollouts only from here on: policy forward + env steps + buffer add
    started, before = time.perf_counter(), sac.num_timesteps
    sac.learn(steps * 4, reset_num_timesteps=False)
    out["SAC rollout step, 4 envs (ms)"] = (time.perf_counter() - started) / ((sac.num_timesteps - before) / 4) * 1e3
    ppo = build_agent("ppo", params, market, env_config, agents.ppo, seed=0)
    started = time.perf_counter()
    ppo.learn(128 * 4)  # one rollout of 128 steps x 4 envs, then n_epochs x 2 minibatches of 256
    total = time.perf_counter() - started
    started = time.perf_counter()
    ppo.train()
    train = time.perf_counter() - started
    out["PPO rollout step, 4 envs (ms)"] = (total - train) / 128 * 1e3
    out["PPO minibatch gradient step (ms)"] = train / (agents.ppo.n_epochs * 2) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    results = {n: measure(n, args.steps) for n in args.assets}
    first, last = args.assets[0], args.assets[-1]
    print(f"{'':34}" + "".join(f"{f'N={n}':>12}" for n in args.assets) + f"{'ratio':>9}")
    for name in results[first]:
        ratio = results[last][name] / results[first][name]
        print(f"{name:34}" + "".join(f"{results[n][name]:12.3f}" for n in args.assets) + f"{ratio:9.2f}")
    print(f"linear growth: ratio {last / first:.2f}")


if __name__ == "__main__":
    main()
