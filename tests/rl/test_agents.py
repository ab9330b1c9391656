"""PPO and SAC under Ray Tune on a tiny market, and the registry round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rayfolio.rl.agents import evaluate_agent
from rayfolio.rl.config import FLOAT_BYTES, AgentsConfig, AlgorithmSearch, AllocationConfig, observation_floats
from rayfolio.rl.load import best_allocator
from rayfolio.rl.market import MarketData
from rayfolio.rl.measures import sharpe
from rayfolio.rl.search import draw_configurations, search_agents
from rayfolio.rl.stage import load_agents, register_agent
from rayfolio.training.cards import Calendar
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError
from tests.rl.conftest import SMALL_ENV

TINY = {
    "ppo": AlgorithmSearch(timesteps=128, evaluations=2, num_samples=1, seeds=(0, 1), n_envs=2, n_steps=(32,),
                           batch_size=32, n_epochs=2, net_arch=(16,), asset_embedding=4),
    "sac": AlgorithmSearch(timesteps=60, evaluations=1, num_samples=1, seeds=(0,), n_envs=2, batch_size=16,
                           buffer_size=500, learning_starts=20, net_arch=(16,), asset_embedding=4),
}  # fmt: skip


@pytest.fixture(scope="module")
def store_market(small_store, small_splitter) -> MarketData:
    return MarketData.from_panel(Panel.from_store(small_store), small_splitter, SMALL_ENV)


@pytest.fixture(scope="module")
def searches(store_market, tmp_path_factory):
    storage = tmp_path_factory.mktemp("agents")
    return {
        algorithm: search_agents(
            store_market, algorithm, SMALL_ENV, TINY[algorithm], cpus_per_trial=0.5, max_concurrent=2, storage=storage
        )
        for algorithm in ("ppo", "sac")
    }


def test_draws_share_hyperparameters_across_seeds():
    draws = draw_configurations("ppo", AlgorithmSearch(num_samples=3, seeds=(0, 1)), seed=0)
    assert len(draws) == 6 and [d["seed"] for d in draws] == [0, 1] * 3
    for a, b in zip(draws[::2], draws[1::2], strict=True):
        assert {k: v for k, v in a.items() if k != "seed"} == {k: v for k, v in b.items() if k != "seed"}
    assert len({d["lr"] for d in draws}) == 3
    assert draws == draw_configurations("ppo", AlgorithmSearch(num_samples=3, seeds=(0, 1)), seed=0)


def test_search_trains_every_trial_and_keeps_the_best_validation_checkpoint(searches, store_market):
    ppo = searches["ppo"]
    assert len(ppo.trials) == 2 and (ppo.trials["status"] == "ok").all()
    assert set(ppo.trials["seed"]) == {0, 1}
    assert ppo.val_sharpe == pytest.approx(ppo.trials["best_val_sharpe"].max())
    # The chosen policy, reloaded from its checkpoint, reproduces its validation Sharpe.
    run = evaluate_agent("ppo", ppo.policy, store_market, SMALL_ENV, store_market.splits["validation"])
    assert sharpe(run.returns.to_numpy()) == pytest.approx(ppo.val_sharpe, rel=1e-6)
    assert 0.0 <= ppo.deflated_sharpe <= 1.0
    assert searches["sac"].trials["status"].tolist() == ["ok"]


def test_trials_declare_their_resources_and_the_outcome_says_how_parallel_the_search_was(searches, store_market):
    sac = searches["sac"]
    # The buffer the trial ran: capped by the 60 steps it makes, not the configured 500.
    assert TINY["sac"].buffer_size == 500 and sac.search.buffer_size == 60
    floats = observation_floats(SMALL_ENV, store_market.n_assets, len(store_market.feature_names))
    p = sac.parallelism
    assert p.memory_per_trial_gb == pytest.approx(2 * 60 * floats * FLOAT_BYTES / 1e9)
    assert (p.trials, p.max_concurrent_trials, p.cpus_per_trial) == (1, 2, 0.5)
    assert p.nodes == 1 and p.nodes_used == 1 and p.cluster_cpus >= 1
    assert searches["ppo"].parallelism.trials == 2 and searches["ppo"].trials["node"].notna().all()
    assert "at most 2 at once, each 0.5 CPU" in p.text()


def test_registered_agents_reload_verified_and_act_identically(searches, small_store, small_splitter, store_market,
                                                               tmp_path):  # fmt: skip
    registry = ModelRegistry(tmp_path / "registry")
    calendar = Calendar.of(small_store, small_splitter)
    for outcome in searches.values():
        assert register_agent(registry, calendar, store_market, SMALL_ENV, outcome) == ("v0001", "production")
    config = AllocationConfig(env=SMALL_ENV, agents=AgentsConfig(**TINY))
    panel = Panel.from_store(small_store)
    agents, notes = load_agents(registry, panel, small_splitter, config)
    assert [a.name for a in agents] == ["ppo", "sac"] and len(notes) == 2
    t = store_market.splits["test"][0]
    weights = np.eye(store_market.n_assets + 1)[-1]
    for agent in agents:
        original = searches[agent.name].policy
        obs = agent.env.observation(t, weights)
        np.testing.assert_array_equal(agent.policy.predict(obs, deterministic=True)[0],
                                      original.predict(obs, deterministic=True)[0])  # fmt: skip
        np.testing.assert_allclose(agent.decide(t, weights).sum(), 1.0)
        # A batch of decisions (the service's path) equals the decisions one at a time.
        ts, currents = [t, t + 3], [weights, np.full(store_market.n_assets + 1, 1 / (store_market.n_assets + 1))]
        for one, many in zip([agent.decide(*d) for d in zip(ts, currents, strict=True)],
                             agent.decide_many(ts, currents), strict=True):  # fmt: skip
            np.testing.assert_allclose(one, many, atol=1e-6)
    stored = json.loads((registry.root / "ppo-allocator" / "v0001" / "card.json").read_text())
    assert stored["symbols"] == store_market.symbols.tolist() and stored["algorithm"] == "ppo"
    assert stored["kind"] == "allocator" and stored["env"] == SMALL_ENV.model_dump(mode="json")
    assert best_allocator(registry) == f"{max(searches.values(), key=lambda o: o.val_sharpe).algorithm}-allocator"

    # One flipped byte in the weights: refused, naming the file, before anything is loaded.
    weights_file = registry.root / "sac-allocator" / "v0001" / "weights.pt"
    data = bytearray(weights_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"weights\.pt: sha256 does not match"):
        load_agents(registry, panel, small_splitter, config)

    # A policy trained on another calendar is refused rather than silently mis-evaluated.
    other = config.model_copy(update={"env": SMALL_ENV.model_copy(update={"rebalance_every": 21})})
    with pytest.raises(RegistryError, match="rebalance every 5 days"):
        load_agents(registry, panel, small_splitter, other)


def test_weights_file_holds_tensors_only(searches, small_store, small_splitter, store_market, tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    register_agent(registry, Calendar.of(small_store, small_splitter), store_market, SMALL_ENV, searches["ppo"])
    state = torch.load(registry.root / "ppo-allocator" / "v0001" / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
