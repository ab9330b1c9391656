"""PortfolioEnv with action "residual" (a tilt of equal weight) and a turnover
penalty: hand-worked weights, identities, the reward difference, the torch twin
the explanations use, and the config's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from pydantic import ValidationError

from rayfolio.explain.attributions import PolicyWeights
from rayfolio.rl.config import EnvConfig
from rayfolio.rl.env import PortfolioEnv, residual_weights
from tests.rl.conftest import SMALL_ENV, hand_market

RESIDUAL = EnvConfig(window=2, rebalance_every=1, episode_steps=100, action="residual")
ALL = np.ones(4, bool)  # three risky assets and cash, all tradable


def config(**update) -> EnvConfig:
    """RESIDUAL with some fields changed, validated (model_copy does not validate)."""
    return EnvConfig.model_validate(RESIDUAL.model_dump() | update)


@pytest.fixture()
def returns() -> np.ndarray:
    return np.random.default_rng(3).normal(0.0005, 0.02, size=(30, 3))


def env_of(returns: np.ndarray, config: EnvConfig = RESIDUAL, **market) -> PortfolioEnv:
    return PortfolioEnv(hand_market(returns, **market), config, (0, len(returns) - 1), random_start=False)


def test_zero_action_is_equal_weight_over_the_tradable_assets(returns):
    env = env_of(returns, first=[0, 10, 0])  # A1 is not listed before date 10
    zero = np.zeros(4, np.float32)
    np.testing.assert_array_equal(env.target_weights(zero, 5), [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(env.target_weights(zero, 15), [1 / 3, 1 / 3, 1 / 3, 0.0])
    for scale in (0.25, 1.0, 4.0):  # the scale only sizes departures from 1/n
        np.testing.assert_array_equal(residual_weights(np.zeros(4), ALL, scale), [1 / 3, 1 / 3, 1 / 3, 0.0])


def test_hand_worked_tilts_with_scale_one_half():
    # raw = (1/3) * max(0, 1 + 0.5 a) = (1/3) [1.5, 0.5, 1.0], summing to 1: the risky share is exactly 1 - cash.
    np.testing.assert_allclose(residual_weights(np.array([1.0, -1.0, 0.0, 0.0]), ALL, 0.5), [1 / 2, 1 / 6, 1 / 3, 0])
    np.testing.assert_allclose(
        residual_weights(np.array([1.0, -1.0, 0.0, 0.2]), ALL, 0.5), [0.8 / 2, 0.8 / 6, 0.8 / 3, 0.2]
    )
    # raw = (1/3) [1.5, 1.5, 1.0] sums to 4/3: rescaled to [3/8, 3/8, 1/4], the tilt paid for by A2, not cash.
    np.testing.assert_allclose(residual_weights(np.array([1.0, 1.0, 0.0, -0.7]), ALL, 0.5), [3 / 8, 3 / 8, 1 / 4, 0])
    # A cash action of 1 (or above) is all cash; the negative half of the cash action does nothing.
    np.testing.assert_array_equal(residual_weights(np.array([0.3, 0.0, -0.2, 1.0]), ALL, 0.5), [0, 0, 0, 1])


def test_weights_are_a_long_only_portfolio_on_random_actions():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        tradable = np.append(rng.random(5) < 0.7, True)  # (N+1,), cash always
        scale = float(rng.choice([0.3, 1.0, 2.5]))
        w = residual_weights(rng.uniform(-1.0, 1.0, 6), tradable, scale)
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0.0).all()
        assert (w[:-1][~tradable[:-1]] == 0.0).all()


def test_every_asset_cut_below_minus_one_over_scale_is_all_cash(returns):
    assert (residual_weights(np.array([-0.6, -0.5, -0.9, 0.0]), ALL, 2.0) == [0, 0, 0, 1]).all()
    assert (residual_weights(np.array([-2.1, -3.0, -2.5, -1.0]), ALL, 0.5) == [0, 0, 0, 1]).all()
    np.testing.assert_allclose(residual_weights(np.array([-0.6, -0.4, -0.9, 0.0]), ALL, 2.0), [0, 1, 0, 0])
    env = env_of(returns, config(residual_scale=1.0))
    np.testing.assert_array_equal(env.target_weights(np.array([-1, -1, -1, 0], np.float32), 3), [0, 0, 0, 1])
    nothing = residual_weights(np.array([0.5, 0.5, 0.5, 0.0]), np.array([False, False, False, True]), 1.0)
    np.testing.assert_array_equal(nothing, [0, 0, 0, 1])  # no tradable asset: cash


def test_turnover_penalty_lowers_the_reward_by_exactly_penalty_times_turnover(returns):
    penalty = 0.013
    for action in ("weights", "residual"):
        plain = env_of(returns, config(action=action, cost_bps=10.0))
        taxed = env_of(returns, config(action=action, cost_bps=10.0, turnover_penalty=penalty))
        plain.reset(options={"start": 4}), taxed.reset(options={"start": 4})
        rng = np.random.default_rng(1)
        for _ in range(6):
            a = rng.uniform(-1.0, 1.0, 4).astype(np.float32)
            _, free, _, _, info = plain.step(a)
            _, paid, _, _, taxed_info = taxed.step(a)
            assert info["turnover"] > 0.0
            assert info == taxed_info  # the portfolio itself does not pay the penalty
            assert paid == free - penalty * info["turnover"]


def test_residual_env_passes_the_gymnasium_checker(small_market):
    residual = EnvConfig.model_validate(
        SMALL_ENV.model_dump() | {"action": "residual", "residual_scale": 2.0, "turnover_penalty": 0.01}
    )
    check_env(PortfolioEnv(small_market, residual, small_market.splits["train"]), skip_render_check=True)


class _ActionIsObservation:
    """A SAC-shaped policy whose deterministic action is its input: feeds PolicyWeights chosen actions."""

    def actor(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return obs


@pytest.mark.parametrize(("action", "scale"), [("residual", 0.5), ("residual", 2.0), ("weights", 1.0)])
def test_policy_weights_twin_matches_the_environment(returns, action, scale):
    env = env_of(returns, config(action=action, residual_scale=scale), first=[0, 10, 0])
    rng = np.random.default_rng(2)
    actions = rng.uniform(-1.0, 1.0, (300, 4)).astype(np.float32)
    actions[:20, :3] = -1.0  # every asset cut (at scale >= 1): all cash
    for t in (5, 15):  # with and without the unlisted asset
        twin = PolicyWeights(_ActionIsObservation(), env._tradable[t], env.config)
        with torch.no_grad():
            got = twin(torch.from_numpy(actions)).numpy()
        want = np.stack([env.target_weights(a, t)[:-1] for a in actions])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_config_refuses_combinations_that_make_no_sense():
    with pytest.raises(ValidationError, match=r"action 'residual'.*allow_short"):
        EnvConfig(action="residual", allow_short=True)
    with pytest.raises(ValidationError, match=r"residual_scale 0\.5 has no effect unless action is 'residual'"):
        EnvConfig(residual_scale=0.5)
    with pytest.raises(ValidationError, match="residual_scale"):
        EnvConfig(action="residual", residual_scale=0.0)
    with pytest.raises(ValidationError, match="turnover_penalty"):
        EnvConfig(turnover_penalty=-0.1)
    assert EnvConfig(action="residual", residual_scale=0.5, turnover_penalty=0.01).action == "residual"
