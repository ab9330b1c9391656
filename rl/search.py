"""Agents under Ray Tune: each trial trains one SB3 agent (one hyperparameter
draw, one seed) as a function trainable, evaluates it on the validation period
after costs every ``timesteps / evaluations`` steps and reports the validation
Sharpe with a checkpoint of the policy's weights. The chosen checkpoint is the
best validation Sharpe over every trial and evaluation; its deflated Sharpe
counts all of them as tries.

Each trial declares what it holds (``cpus_per_trial`` CPUs, its buffer's memory) so Tune and Ray place
trials across the nodes of a cluster; the buffers are capped by the universe's size first
(``AlgorithmSearch.at_scale``), and the outcome says how parallel the search was.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.search import BasicVariantGenerator
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy

from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR
from rayfolio.data.verbosity import tune_verbosity
from rayfolio.rl.agents import build_agent, evaluate_agent, policy_kwargs, rebuild_policy
from rayfolio.rl.config import Algorithm, AlgorithmSearch, EnvConfig, observation_floats
from rayfolio.rl.market import MarketData
from rayfolio.rl.measures import annual_return, sharpe
from rayfolio.training.metrics import deflated_sharpe

POLICY_FILE, META_FILE = "policy.pt", "meta.json"


@dataclass(frozen=True)
class SearchParallelism:
    """How the search ran on Ray: what each trial held and how many ran at once, on how many nodes."""

    trials: int
    max_concurrent_trials: int
    cpus_per_trial: float
    memory_per_trial_gb: float  # the buffer's memory each trial declared
    cluster_cpus: float
    nodes: int  # alive nodes in the cluster
    nodes_used: int  # distinct nodes the trials ran on

    def text(self) -> str:
        return (
            f"{self.trials} trial{'s' if self.trials != 1 else ''}, at most {self.max_concurrent_trials} at once, "
            f"each {self.cpus_per_trial:g} CPU "
            f"and {self.memory_per_trial_gb:.2f} GB of buffer, on {self.nodes_used} of {self.nodes} node(s) "
            f"({self.cluster_cpus:g} CPUs)"
        )


@dataclass(frozen=True)
class AgentSearchOutcome:
    algorithm: str
    params: dict  # the chosen trial's hyperparameters and seed
    val_sharpe: float  # annualised, after costs, of the chosen checkpoint
    timesteps: int  # of the chosen checkpoint
    trials: pd.DataFrame  # one row per trial: hyperparameters, seed, best validation Sharpe, steps/s
    deflated_sharpe: float
    policy: BasePolicy
    policy_kwargs: dict
    search: AlgorithmSearch  # what the trials ran: the configured search at this universe's size
    parallelism: SearchParallelism


def draw_configurations(algorithm: Algorithm, search: AlgorithmSearch, seed: int) -> list[dict]:
    """``num_samples`` hyperparameter draws, each repeated for every seed, so the
    seeds of one draw differ only in their seed."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in range(search.num_samples):
        params = {
            "sample": sample,
            "lr": float(np.exp(rng.uniform(*np.log(search.lr)))),
            "gamma": float(rng.choice(search.gamma)),
        }
        if algorithm == "ppo":
            params |= {"n_steps": int(rng.choice(search.n_steps)), "ent_coef": float(rng.uniform(*search.ent_coef))}
        out += [{**params, "seed": int(s)} for s in search.seeds]
    return out


class ValidationReport(BaseCallback):
    """Every ``every`` environment steps (and at the end of training): the
    policy's validation walk after costs, reported to Tune with a checkpoint of
    the policy's weights. Training throughput excludes the evaluations."""

    def __init__(self, market: MarketData, algorithm: Algorithm, env: EnvConfig, every: int, params: dict):
        super().__init__()
        self.market, self.algorithm, self.env, self.every, self.params = market, algorithm, env, every, params
        self.evaluations, self.evaluating_s = 0, 0.0

    def _on_training_start(self) -> None:
        # A resumed trial starts from its checkpoint's step count.
        self.first_step = self.last_at = self.model.num_timesteps
        self.next_at = self.first_step + self.every
        self.started = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self._report()
            self.next_at += self.every
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps > self.last_at:
            self._report()

    def _report(self) -> None:
        began = time.perf_counter()
        run = evaluate_agent(self.algorithm, self.model.policy, self.market, self.env, self.market.splits["validation"])
        returns = run.returns.to_numpy()
        metrics = {
            "val_sharpe": sharpe(returns),
            "val_annual_return": annual_return(returns),
            "val_turnover_per_rebalance": float(run.turnover.mean()),
            "timesteps": int(self.num_timesteps),
            "steps_per_s": (self.num_timesteps - self.first_step) / max(began - self.started - self.evaluating_s, 1e-9),
            "evaluation": self.evaluations,
        }
        with tempfile.TemporaryDirectory() as directory:
            torch.save(self.model.policy.state_dict(), Path(directory) / POLICY_FILE)
            (Path(directory) / META_FILE).write_text(json.dumps({**metrics, "params": self.params}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        self.evaluations, self.last_at = self.evaluations + 1, self.num_timesteps
        self.evaluating_s += time.perf_counter() - began


def agent_trial(
    config: dict,
    *,
    market: MarketData,
    algorithm: Algorithm,
    env: EnvConfig,
    search: AlgorithmSearch,
    threads: int,
) -> None:
    """One Tune trial. A restarted trial resumes from its last checkpoint's
    policy weights and step count (the optimiser and replay buffer start afresh)."""
    torch.set_num_threads(threads)
    params = config["trial"]
    agent = build_agent(algorithm, params, market, env, search, params["seed"])
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            agent.policy.load_state_dict(torch.load(Path(directory) / POLICY_FILE, weights_only=True))
            agent.num_timesteps = json.loads((Path(directory) / META_FILE).read_text())["timesteps"]
    report = ValidationReport(market, algorithm, env, math.ceil(search.timesteps / search.evaluations), params)
    if search.timesteps > agent.num_timesteps:
        agent.learn(search.timesteps - agent.num_timesteps, callback=report, reset_num_timesteps=False)


def concurrent_trials(cpus_per_trial: float, requested: int | None, memory_bytes: float = 0.0) -> int:
    """``requested``, or as many trials as the cluster's CPUs and memory hold together."""
    if requested is not None:
        return requested
    resources = ray.cluster_resources()
    by_cpu = math.floor(resources.get("CPU", 1) / cpus_per_trial)
    by_memory = math.floor(resources.get("memory", 0.0) / memory_bytes) if memory_bytes > 0 else by_cpu
    return max(1, min(by_cpu, by_memory))


def check_memory(algorithm: Algorithm, memory_bytes: float) -> None:
    """A trial that no node can hold would wait forever: refuse it before the search starts."""
    largest = max((n["Resources"].get("memory", 0.0) for n in ray.nodes() if n["Alive"]), default=0.0)
    if memory_bytes > largest:
        raise ValueError(
            f"{algorithm}: a trial's buffer needs {memory_bytes / 1e9:.2f} GB and the largest Ray node offers "
            f"{largest / 1e9:.2f} GB; lower allocation.agents.{algorithm}.memory_gb"
        )


def search_agents(
    market: MarketData,
    algorithm: Algorithm,
    env: EnvConfig,
    search: AlgorithmSearch,
    *,
    cpus_per_trial: float,
    max_concurrent: int | None,
    storage: Path,
    seed: int = 0,
) -> AgentSearchOutcome:
    # Budgets that depend on the universe first: the trials, the draws and the report all see these.
    floats = observation_floats(env, market.n_assets, len(market.feature_names))
    search = search.at_scale(algorithm, floats, market.n_assets)
    memory = float(search.buffer_bytes(algorithm, floats))
    check_memory(algorithm, memory)
    max_concurrent = concurrent_trials(cpus_per_trial, max_concurrent, memory)
    configurations = draw_configurations(algorithm, search, seed)
    trainable = tune.with_resources(
        tune.with_parameters(
            agent_trial,
            market=market,
            algorithm=algorithm,
            env=env,
            search=search,
            threads=max(1, int(cpus_per_trial)),
        ),
        {"CPU": cpus_per_trial, "memory": memory},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configurations)},
        tune_config=tune.TuneConfig(
            metric="val_sharpe",
            mode="max",
            search_alg=BasicVariantGenerator(max_concurrent=max_concurrent),
        ),
        run_config=tune.RunConfig(
            name=f"{algorithm}-search",
            storage_path=str(storage.resolve()),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=tune_verbosity(),  # status tables with --verbose
        ),
    )
    results = tuner.fit()
    rows, candidates, trial_best, nodes_used = [], [], [], set()
    for result in results:
        params = result.config["trial"]
        if result.metrics and result.metrics.get("node_ip"):
            nodes_used.add(result.metrics["node_ip"])
        if result.error is not None or not result.best_checkpoints:
            rows.append({**params, "best_val_sharpe": float("nan"), "status": "failed"})
            continue
        scored = [(m["val_sharpe"], c, m) for c, m in result.best_checkpoints if np.isfinite(m["val_sharpe"])]
        candidates += scored
        best = max((s for s, _, _ in scored), default=float("nan"))
        if scored:
            trial_best.append((len(rows), max(scored, key=lambda c: c[0])[1]))
        rows.append(
            {
                **params,
                "best_val_sharpe": best,
                "steps_per_s": result.metrics.get("steps_per_s"),
                "node": result.metrics.get("node_ip"),
                "status": "ok",
            }
        )
    if not candidates:
        raise RuntimeError(f"every {algorithm} trial failed; see {storage / f'{algorithm}-search'}")
    score, checkpoint, metrics = max(candidates, key=lambda c: c[0])
    kwargs = policy_kwargs(market, env, search)
    policy = rebuild_policy(algorithm, market, env, kwargs)
    with checkpoint.as_directory() as directory:
        policy.load_state_dict(torch.load(Path(directory) / POLICY_FILE, weights_only=True))
        params = json.loads((Path(directory) / META_FILE).read_text())["params"]
    chosen = evaluate_agent(algorithm, policy, market, env, market.splits["validation"]).returns.to_numpy()
    per_day = np.array([s for s, _, _ in candidates]) / math.sqrt(TRADING_DAYS_PER_YEAR)
    trials = pd.DataFrame(rows)
    # A seed's luck is not skill: every trial's own best checkpoint (chosen on validation) is also
    # walked through the test period, so the report can give each draw's mean +- sd over its seeds.
    # Nothing is chosen on these numbers.
    trials["test_sharpe"] = np.nan
    for row, trial_checkpoint in trial_best:
        trial_policy = rebuild_policy(algorithm, market, env, kwargs)
        with trial_checkpoint.as_directory() as directory:
            trial_policy.load_state_dict(torch.load(Path(directory) / POLICY_FILE, weights_only=True))
        returns = evaluate_agent(algorithm, trial_policy, market, env, market.splits["test"]).returns.to_numpy()
        trials.loc[row, "test_sharpe"] = sharpe(returns)
    parallelism = SearchParallelism(
        trials=len(configurations),
        max_concurrent_trials=max_concurrent,
        cpus_per_trial=cpus_per_trial,
        memory_per_trial_gb=memory / 1e9,
        cluster_cpus=float(ray.cluster_resources().get("CPU", 0.0)),
        nodes=sum(1 for n in ray.nodes() if n["Alive"]),
        nodes_used=len(nodes_used),
    )
    return AgentSearchOutcome(
        algorithm,
        params,
        float(score),
        int(metrics["timesteps"]),
        trials,
        deflated_sharpe(chosen, per_day),
        policy,
        kwargs,
        search,
        parallelism,
    )
