"""Per-step cost of the allocation agents as the universe grows (single process, one torch thread).

For each number of assets N: a random market of 2,520 days with the quickstart's environment (window 20,
6 features, monthly steps) and agents (net_arch 64x64, embedding 8, 4 vectorised envs, batch 256), and
the time of: one environment step (observation included), one observation alone, a replay-buffer
sample of 256, one SAC gradient step (buffer sample, actor + twin critics forward/backward), the SAC
and PPO policies on the 4 observations of one rollout step, and PPO's epochs over one rollout. The
ratio column is the time at the largest N over the smallest: linear growth is N_max / N_min.

    python -m bench.agent_scale [--assets 100 400] [--rounds 5]
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
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def components(n_assets: int) -> dict[str, tuple]:
    """Name -> (callable, repeats) for one universe size, agents built and their buffers filled."""
    market, env_config, agents = random_market(n_assets), EnvConfig(), AgentsConfig()
    env = PortfolioEnv(market, env_config, market.splits["train"])
    env.reset(seed=0)
    action = np.random.default_rng(0).uniform(-1, 1, n_assets + 1).astype(np.float32)

    def env_step():
        if env.step(action)[3]:
            env.reset()

    params = {"lr": 3e-4, "gamma": 0.99, "n_steps": 128, "ent_coef": 0.0}
    # Buffer: just what the gradient steps sample from (at_scale caps the real one).
    sac = build_agent("sac", params, market, env_config, agents.sac.model_copy(update={"buffer_size": 2_000}), seed=0)
    sac.learning_starts = 10**9
    sac.learn(800)  # 200 rollout steps of 4 envs fill the buffer
    ppo = build_agent("ppo", params, market, env_config, agents.ppo, seed=0)
    ppo.learn(128 * 4)  # one rollout of 128 steps x 4 envs
    minibatches = agents.ppo.n_epochs * 2  # 512 observations in minibatches of 256, n_epochs times
    batch4 = np.stack([env.observation(env.first_decision + i, env._cash()) for i in range(4)])
    return {
        "env step (ms)": (env_step, 200),
        "observation (ms)": (lambda: env.observation(env.first_decision, env._cash()), 200),
        "SAC buffer sample 256 (ms)": (lambda: sac.replay_buffer.sample(256, sac._vec_normalize_env), 3),
        "SAC gradient step (ms)": (lambda: sac.train(gradient_steps=1, batch_size=256), 2),
        "SAC policy, 4 observations (ms)": (lambda: sac.predict(batch4), 10),
        "PPO policy, 4 observations (ms)": (lambda: ppo.predict(batch4), 10),
        f"PPO epochs, x{minibatches} minibatches of 256 (ms)": (ppo.train, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    built = {n: components(n) for n in args.assets}
    # Sizes interleaved, round after round, and the fastest round kept: on a shared machine the
    # others' load only ever adds time, and it hits every size alike.
    best: dict[int, dict[str, float]] = {n: {} for n in args.assets}
    for _ in range(args.rounds):
        for n in args.assets:
            for name, (fn, repeats) in built[n].items():
                seconds = per_call(fn, repeats) * 1e3
                best[n][name] = min(best[n].get(name, float("inf")), seconds)
    first, last = args.assets[0], args.assets[-1]
    print(f"{'':44}" + "".join(f"{f'N={n}':>11}" for n in args.assets) + f"{'ratio':>8}")
    for name in best[first]:
        ratio = best[last][name] / best[first][name]
        print(f"{name:44}" + "".join(f"{best[n][name]:11.3f}" for n in args.assets) + f"{ratio:8.2f}")
    print(f"linear growth: ratio {last / first:.2f} (fastest of {args.rounds} interleaved rounds, one torch thread)")


if __name__ == "__main__":
    main()
