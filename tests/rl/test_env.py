"""PortfolioEnv: the gymnasium contract, cost accounting, reward identity,
weight drift, reachable portfolios and no look-ahead."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rayfolio.rl.config import EnvConfig
from rayfolio.rl.env import PortfolioEnv, long_only_weights, rebalance
from tests.rl.conftest import SMALL_ENV, hand_market

COST_BPS = 25.0
ONE_DAY = EnvConfig(window=2, rebalance_every=1, cost_bps=COST_BPS, episode_steps=100)


def one_hot(n: int, i: int) -> np.ndarray:
    a = np.full(n, -1.0, dtype=np.float32)
    a[i] = 1.0
    return a


@pytest.fixture()
def returns() -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.normal(0.0005, 0.02, size=(40, 3))


def deterministic_env(returns: np.ndarray, config: EnvConfig = ONE_DAY, **market) -> PortfolioEnv:
    m = hand_market(returns, **market)
    return PortfolioEnv(m, config, (0, len(returns) - 1), random_start=False)


def test_passes_gymnasium_and_sb3_env_checkers(small_market):
    for random_start in (True, False):
        env = PortfolioEnv(small_market, SMALL_ENV, small_market.splits["train"], random_start=random_start)
        check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=False)
    short = SMALL_ENV.model_copy(update={"allow_short": True})
    check_env(PortfolioEnv(small_market, short, small_market.splits["train"]), skip_render_check=True)


def test_observation_layout(small_market):
    env = PortfolioEnv(small_market, SMALL_ENV, small_market.splits["train"], random_start=False)
    obs, info = env.reset()
    t, w, n, f = info["date_index"], SMALL_ENV.window, small_market.n_assets, len(small_market.feature_names)
    assert obs.shape == (w * n * f + n + 1,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[: w * n * f].reshape(w, n, f), small_market.features[t - w + 1 : t + 1])
    np.testing.assert_array_equal(obs[w * n * f :], [0.0] * n + [1.0])  # starts in cash


def test_zero_turnover_pays_nothing(returns):
    env = deterministic_env(returns)
    env.reset()
    cash = one_hot(4, 3)
    for _ in range(3):  # staying in cash: no trade, no cost, no growth
        _, reward, _, _, info = env.step(cash)
        assert info["turnover"] == 0.0 and info["cost"] == 0.0 and reward == 0.0
    _, _, _, _, info = env.step(np.array([0.5, 0.3, 0.2, 0.0], np.float32))
    drifted = env._weights.copy()
    _, reward, _, _, info = env.step(drifted.astype(np.float32))  # asking for the drifted weights: no trade
    assert info["turnover"] == pytest.approx(0.0, abs=1e-6) and info["cost"] == pytest.approx(0.0, abs=1e-9)


def test_a_full_switch_pays_twice_cost_bps_on_the_traded_amount(returns):
    env = deterministic_env(returns)
    env.reset()
    _, _, _, _, first = env.step(one_hot(4, 0))  # cash -> all A0: buys 1.0
    assert first["turnover"] == pytest.approx(1.0) and first["cost"] == pytest.approx(COST_BPS / 1e4)
    _, reward, _, _, switch = env.step(one_hot(4, 1))  # all A0 -> all A1: sells 1.0, buys 1.0
    assert switch["turnover"] == pytest.approx(2.0)
    assert switch["cost"] == pytest.approx(2 * COST_BPS / 1e4)
    t = switch["date_index"]
    assert reward == pytest.approx(math.log((1 - 2 * COST_BPS / 1e4) * (1 + returns[t + 1, 1])), rel=1e-12)


def test_reward_is_the_log_growth_of_the_net_value_and_weights_drift(returns):
    """An independent, loop-by-loop account of the value over a whole episode."""
    env = deterministic_env(returns)
    env.reset()
    rng = np.random.default_rng(0)
    value, weights = 1.0, np.array([0.0, 0.0, 0.0, 1.0])
    total_reward, done = 0.0, False
    while not done:
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        t = env._t
        obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        positive = np.maximum(action.astype(np.float64), 0)
        target = positive / positive.sum()
        cost = COST_BPS / 1e4 * sum(abs(target[i] - weights[i]) for i in range(3))
        growth = [1 + returns[t + 1, i] for i in range(3)] + [1.0]
        gross = sum(target[i] * growth[i] for i in range(4))
        new_value = value * (1 - cost) * gross
        assert reward == pytest.approx(math.log(new_value / value), rel=1e-10, abs=1e-14)
        weights = np.array([target[i] * growth[i] / gross for i in range(4)])
        np.testing.assert_allclose(obs[-4:], weights, rtol=1e-6)  # the observation carries the drifted weights
        value, total_reward = new_value, total_reward + reward
    assert total_reward == pytest.approx(math.log(value), rel=1e-10)
    assert env._value == pytest.approx(value, rel=1e-12)


def test_multi_day_steps_hold_through_the_period(returns):
    """With k days per step the k-day growth is buy-and-hold: prod(1 + r) per asset."""
    config = ONE_DAY.model_copy(update={"rebalance_every": 5})
    env = deterministic_env(returns, config)
    env.reset()
    t = env._t
    target = np.array([0.2, 0.5, 0.3, 0.0])
    _, reward, _, _, _ = env.step(target)
    held = target[:3] * np.prod(1 + returns[t + 1 : t + 6], axis=0)
    assert reward == pytest.approx(math.log((1 - COST_BPS / 1e4) * held.sum()), rel=1e-10)
    np.testing.assert_allclose(env._weights[:3], held / held.sum(), rtol=1e-10)


def test_actions_at_t_earn_only_the_returns_from_t_to_t_plus_1(returns):
    """Change every return but t+1's: the reward at t does not move; change t+1's: it does."""
    base = deterministic_env(returns)
    base.reset()
    for _ in range(5):
        base.step(one_hot(4, 0))
    t = base._t
    _, reward, _, _, _ = base.step(np.array([0.3, 0.3, 0.4, 0.0], np.float32))

    def replay(changed: np.ndarray) -> float:
        env = deterministic_env(changed)
        env.reset()
        for _ in range(5):
            env.step(one_hot(4, 0))
        return env.step(np.array([0.3, 0.3, 0.4, 0.0], np.float32))[1]

    other = returns.copy()
    other[t + 2 :] = np.random.default_rng(1).normal(0, 0.05, other[t + 2 :].shape)
    assert replay(other) == reward  # the future after t+1: not seen
    changed = returns.copy()
    changed[t + 1] += 0.01
    assert replay(changed) != reward


def test_observation_at_t_uses_no_feature_after_t(small_market):
    env = PortfolioEnv(small_market, SMALL_ENV, small_market.splits["train"], random_start=False)
    t = 200
    before = env.observation(t, env._cash())
    features = small_market.features.copy()
    features[t + 1 :] = 99.0
    future_changed = dataclasses.replace(small_market, features=features)
    after = PortfolioEnv(future_changed, SMALL_ENV, small_market.splits["train"]).observation(t, env._cash())
    np.testing.assert_array_equal(before, after)


def test_concentrated_portfolios_are_reachable():
    tradable = np.ones(5, bool)
    np.testing.assert_array_equal(long_only_weights(np.array([-1.0, 1.0, -1.0, -0.5, -1.0]), tradable), np.eye(5)[1])
    w = np.array([0.7, 0.0, 0.25, 0.05, 0.0])  # any point of the simplex is the image of itself
    np.testing.assert_allclose(long_only_weights(w, tradable), w)
    np.testing.assert_array_equal(long_only_weights(-np.ones(5), tradable), np.eye(5)[4])  # nothing positive: cash
    # The corner of the box: all in one of 21 positions, where a softmax over the box stops at 27%.
    corner = np.append(1.0, -np.ones(20))
    assert long_only_weights(corner, np.ones(21, bool))[0] == 1.0
    assert np.exp(corner)[0] / np.exp(corner).sum() == pytest.approx(0.2697, abs=1e-4)


def test_assets_that_cannot_be_held_get_no_weight(returns):
    # A1 is listed only from date 10 on; A2 is gone after date 30.
    env = deterministic_env(returns, first=[0, 10, 0], last=[39, 39, 30])
    env.reset()
    for t in (5, 29, 31):
        w = env.target_weights(np.ones(4, np.float32), t)
        assert w.sum() == pytest.approx(1.0)
        assert (w[1] == 0) == (t < 10) and (w[2] == 0) == (t + 1 > 30)


def test_short_positions_respect_the_gross_limit(returns):
    config = ONE_DAY.model_copy(update={"allow_short": True, "gross_limit": 1.5})
    env = deterministic_env(returns, config)
    env.reset()
    w = env.target_weights(np.array([1.0, -1.0, 1.0, 0.0], np.float32), 5)
    assert np.abs(w[:3]).sum() == pytest.approx(1.5) and w.sum() == pytest.approx(1.0)
    _, reward, _, _, info = env.step(np.array([1.0, -1.0, 1.0, 0.0], np.float32))
    assert info["turnover"] == pytest.approx(1.5) and np.isfinite(reward)


@pytest.mark.parametrize("penalty", ["variance", "drawdown"])
def test_risk_penalty_lowers_the_reward_by_its_definition(returns, penalty):
    plain = deterministic_env(returns)
    penalised = deterministic_env(returns, ONE_DAY.model_copy(update={"risk_penalty": penalty, "risk_coef": 3.0}))
    plain.reset()
    penalised.reset()
    for _ in range(10):
        action = one_hot(4, 2)
        _, r0, _, _, info = plain.step(action)
        _, r1, _, _, _ = penalised.step(action)
        net = info["net_growth"]
        expected = 3.0 * (net - 1) ** 2 if penalty == "variance" else 3.0 * (1 - penalised._value / penalised._peak)
        assert r0 - r1 == pytest.approx(expected, abs=1e-12)


def test_training_episodes_start_at_random_dates_inside_the_period(small_market):
    period = small_market.splits["train"]
    env = PortfolioEnv(small_market, SMALL_ENV, period)
    starts = {env.reset(seed=s)[1]["date_index"] for s in range(20)}
    assert len(starts) > 10 and min(starts) >= max(period[0], SMALL_ENV.window - 1)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
        assert info["date_index"] + SMALL_ENV.rebalance_every <= period[1]  # holding stays inside the period
    assert steps <= SMALL_ENV.episode_steps


def test_rebalance_kernel_matches_numpy():
    rng = np.random.default_rng(2)
    target, weights = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    growth = np.append(1 + rng.normal(0, 0.02, 5), 1.0)
    drifted, turnover, gross = rebalance(target, weights, growth)
    assert turnover == pytest.approx(np.abs(target[:-1] - weights[:-1]).sum())
    assert gross == pytest.approx(target @ growth)
    np.testing.assert_allclose(drifted, target * growth / (target @ growth))


def test_too_short_a_period_is_refused_with_the_dates(returns):
    m = hand_market(returns)
    with pytest.raises(ValueError, match="too short for a window of 2 days and a rebalance every 30 days"):
        PortfolioEnv(m, ONE_DAY.model_copy(update={"rebalance_every": 30}), (0, 20))
