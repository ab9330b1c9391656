"""The forecast tilt around 1/N: hand-worked weights and bands, the cap and the
budget on random draws against an independent reference, k = 0 is the
equal-weight baseline, the grid chosen on validation, and the card in the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rayfolio.data.store import sha256_file
from rayfolio.rl.backtest import rebalance_dates, simulate
from rayfolio.rl.baselines import EqualWeight
from rayfolio.rl.config import TiltConfig
from rayfolio.rl.load import best_allocator
from rayfolio.rl.tilt import (
    TiltAllocator,
    TiltParams,
    apply_band,
    choose_tilt,
    load_tilt,
    propose,
    register_tilt,
    tilt_weights,
)
from rayfolio.training.cards import ALLOCATOR_KINDS, CARD, TiltCard
from rayfolio.training.registry import CARD_FILE, MANIFEST, WEIGHTS, ModelRegistry, RegistryError
from tests.rl.conftest import hand_market
from tests.training.card_examples import CALENDAR, allocator_card

ALL = np.ones(4, dtype=bool)


def test_hand_worked_tilt_with_the_cap_binding():
    # z = [2, 0.5, -0.5, -2], k = 0.5: (1/4)(1 + k z) = [0.5, 0.3125, 0.1875, 0.0], summing to 1.
    # cap 0.4: asset 0 capped at 0.4; the other 0.6 goes to assets 1, 2 in proportion 1.25 : 0.75,
    #   [0.375, 0.225], both under the cap: [0.4, 0.375, 0.225, 0.0], no cash.
    # cap 0.3: assets 0 and 1 capped (0.6); 0.4 left for asset 2 alone, over the cap too: capped.
    #   Asset 3 is at 0 (1 + k z = 0), so only 3 assets can hold weight, 3 x 0.3 < 1: 0.1 in cash.
    z = np.array([2.0, 0.5, -0.5, -2.0])
    np.testing.assert_allclose(tilt_weights(z, ALL, 0.5, 0.4), [0.4, 0.375, 0.225, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(tilt_weights(z, ALL, 0.5, 0.3), [0.3, 0.3, 0.3, 0.0, 0.1], atol=1e-15)
    # No cap binding (cap 1): the raw tilt itself.
    np.testing.assert_allclose(tilt_weights(z, ALL, 0.5, 1.0), [0.5, 0.3125, 0.1875, 0.0, 0.0], atol=1e-15)


def test_missing_forecast_is_z_zero_and_untradable_assets_get_nothing():
    # Tradable: 0, 1, 3 (n = 3); asset 1 has no forecast: (1/3)(1 + 0.5 [1, 0, -1]) = [0.5, 1/3, 1/6].
    z = np.array([1.0, np.nan, 5.0, -1.0])
    w = tilt_weights(z, np.array([True, True, False, True]), 0.5, 1.0)
    np.testing.assert_allclose(w, [0.5, 1 / 3, 0.0, 1 / 6, 0.0], atol=1e-15)
    np.testing.assert_array_equal(tilt_weights(z, np.zeros(4, dtype=bool), 0.5, 0.3), [0, 0, 0, 0, 1.0])


def test_k_zero_is_exactly_the_equal_weight_baseline():
    market = hand_market(np.zeros((30, 6)), first=[0, 0, 12, 0, 0, 0], last=[29, 29, 29, 29, 8, 29])
    z = np.random.default_rng(0).normal(size=(30, 6))
    for t in (0, 5, 10, 20):
        tradable = market.tradable(t, 5)
        expected = EqualWeight(market, 5).decide(t, np.eye(7)[-1])
        np.testing.assert_array_equal(tilt_weights(z[t], tradable, 0.0, 0.25), expected)


def _reference(z: np.ndarray, tradable: np.ndarray, k: float, cap: float) -> np.ndarray:
    """The same target found another way: bisection on the scale s of min(cap, s (1 + k z)+)."""
    raw = np.where(tradable, np.maximum(1.0 + k * np.nan_to_num(z), 0.0), 0.0)
    if not tradable.any():
        return np.r_[np.zeros(len(z)), 1.0]
    if raw.sum() == 0:
        raw = tradable.astype(float)
    goal = min(1.0, cap * np.count_nonzero(raw))
    low, high = 0.0, 1.0 / raw[raw > 0].min()  # at high every positive asset is at least 1 >= cap
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if np.minimum(cap, mid * raw).sum() < goal else (low, mid)
    w = np.minimum(cap, high * raw)
    return np.r_[w, 1.0 - w.sum()]


def test_random_draws_sum_to_one_respect_the_cap_and_match_a_reference():
    rng = np.random.default_rng(7)
    capped_to_cash = 0
    for _ in range(400):
        n = int(rng.integers(1, 25))
        z = rng.normal(size=n) * rng.uniform(0.1, 3.0)
        z[rng.random(n) < 0.2] = np.nan
        tradable = rng.random(n) < 0.8
        k, cap = rng.uniform(0.0, 3.0), rng.uniform(0.02, 1.0)
        w = tilt_weights(z, tradable, k, cap)
        assert w.shape == (n + 1,) and np.isclose(w.sum(), 1.0, atol=1e-12)
        assert (w >= 0).all() and (w[:-1] <= cap + 1e-12).all() and (w[:-1][~tradable] == 0).all()
        np.testing.assert_allclose(w, _reference(z, tradable, k, cap), atol=1e-9)
        held = tradable & (1.0 + k * np.nan_to_num(z) > 0)
        if w[-1] > 1e-12 and tradable.any():  # cash only when every asset that can hold weight is at the cap
            np.testing.assert_allclose(w[:-1][held], cap, atol=1e-12)
            assert np.count_nonzero(held) * cap < 1.0
            capped_to_cash += 1
        zz = np.nan_to_num(z)[tradable]  # the tilt keeps the forecasts' order
        order = np.argsort(zz, kind="stable")
        assert (np.diff(w[:-1][tradable][order]) >= -1e-12).all()
    assert capped_to_cash > 10  # the n * cap < 1 case was drawn


def test_band_skips_small_trades_and_cash_absorbs_them():
    current = np.array([0.30, 0.25, 0.20, 0.15, 0.10])
    target = np.array([0.28, 0.30, 0.12, 0.25, 0.05])
    # band 0.03: asset 0's trade (-0.02) is skipped and keeps 0.30; the others trade (+0.05, -0.08, +0.10).
    # Risky 0.30 + 0.30 + 0.12 + 0.25 = 0.97: cash 0.03.
    np.testing.assert_allclose(apply_band(target, current, 0.03), [0.30, 0.30, 0.12, 0.25, 0.03], atol=1e-15)
    # band 0.06: only asset 2 (-0.08) and asset 3 (+0.10) trade: 0.30 + 0.25 + 0.12 + 0.25, cash 0.08.
    np.testing.assert_allclose(apply_band(target, current, 0.06), [0.30, 0.25, 0.12, 0.25, 0.08], atol=1e-15)
    np.testing.assert_allclose(apply_band(target, current, 0.2), current, atol=1e-15)  # nothing traded
    out = apply_band(target, current, 0.0)
    assert out is not target and (out == target).all()


def test_band_scales_the_buys_down_when_cash_would_go_negative():
    current = np.array([0.40, 0.30, 0.20, 0.10, 0.0])
    target = np.array([0.38, 0.22, 0.25, 0.15, 0.0])
    # band 0.03: asset 0 keeps 0.40 (skipped -0.02); 0.40 + 0.22 + 0.25 + 0.15 = 1.02, cash -0.02.
    # The buys (+0.05, +0.05) shrink by 0.02 / 0.10 = 20% of their increments: 0.24, 0.14; the sell stays.
    out = apply_band(target, current, 0.03)
    np.testing.assert_allclose(out, [0.40, 0.22, 0.24, 0.14, 0.0], atol=1e-15)
    assert np.isclose(out.sum(), 1.0)


def test_an_asset_that_cannot_be_held_is_sold_whatever_the_band():
    current = np.array([0.01, 0.33, 0.33, 0.33, 0.0])
    z = np.zeros(4)
    tradable = np.array([False, True, True, True])
    w = propose(z, tradable, current, TiltParams(k=0.0, band=0.05, cap=1.0))
    # Asset 0 sold though 0.01 < band; assets 1-3 move by 0.0033 < band and stay; cash takes the 0.01.
    np.testing.assert_allclose(w, [0.0, 0.33, 0.33, 0.33, 0.01], atol=1e-15)


def _planted(n_assets: int = 8, blocks: int = 50, every: int = 5, strength: float = 0.004, seed: int = 0):
    """Returns whose mean over each holding period is ``strength`` x a per-asset draw m (N,),
    and z at each decision date: the standardised m of the period it decides for."""
    rng = np.random.default_rng(seed)
    t_len = blocks * every + 1
    returns = np.zeros((t_len, n_assets))
    z = np.full((t_len, n_assets), np.nan)
    for j in range(blocks):
        m = rng.normal(size=n_assets)
        returns[j * every + 1 : (j + 1) * every + 1] = 0.0003 + strength * m + 0.01 * rng.normal(size=(every, n_assets))
        z[j * every] = (m - m.mean()) / m.std()
    return hand_market(returns), z


def _is_argmax(chosen: TiltParams, grid, config: TiltConfig) -> None:
    assert len(grid) == len(config.k_grid) * len(config.band_grid)
    assert set(zip(grid["k"], grid["band"], strict=True)) == {(k, b) for k in config.k_grid for b in config.band_grid}
    best = grid["sharpe"].max()
    assert np.isfinite(grid["sharpe"]).all() and (grid["turnover"] > 0).all()
    winners = grid[grid["sharpe"] == best]
    assert (chosen.k, chosen.band, chosen.cap) == (winners["k"].min(), winners[winners["k"] == winners["k"].min()][
        "band"].min(), config.cap)  # fmt: skip


def test_choose_tilt_finds_a_planted_signal():
    market, z = _planted()
    config = TiltConfig()
    chosen, grid = choose_tilt(market, z, market.splits["validation"], 5, 10.0, config)
    _is_argmax(chosen, grid, config)
    assert chosen.k > 0
    by_k = grid.groupby("k")["sharpe"].max()
    assert by_k[2.0] > by_k[0.0] + 1.0  # the signal is strong: the tilt beats 1/N by a wide margin


def test_choose_tilt_with_a_useless_signal_still_returns_the_argmax_of_the_whole_grid():
    market, _ = _planted(strength=0.0, seed=1)
    z = np.random.default_rng(2).normal(size=market.returns.shape)
    config = TiltConfig(k_grid=(0.0, 1.0), band_grid=(0.0, 0.01, 0.05), cap=0.3)
    chosen, grid = choose_tilt(market, z, market.splits["validation"], 5, 10.0, config)
    _is_argmax(chosen, grid, config)


def test_choose_tilt_breaks_ties_towards_the_smaller_k():
    market, _ = _planted(seed=3)
    config = TiltConfig(k_grid=(2.0, 0.5, 0.0), band_grid=(0.0,))
    chosen, grid = choose_tilt(market, np.zeros(market.returns.shape), market.splits["validation"], 5, 10.0, config)
    assert grid["sharpe"].nunique() == 1  # z = 0: every k is 1/N
    assert chosen == TiltParams(k=0.0, band=0.0, cap=0.25)


def test_the_allocator_decides_with_propose_and_reads_no_future_forecast():
    market, z = _planted(blocks=10)
    params = TiltParams(k=1.0, band=0.01, cap=0.25)
    allocator = TiltAllocator(market, z, params, 5)
    current = np.r_[np.full(8, 0.12), 0.04]
    expected = propose(z[10], market.tradable(10, 5), current, params)
    np.testing.assert_array_equal(allocator.decide(10, current), expected)
    decisions = rebalance_dates(0, 50, 5)
    run = simulate(allocator, market.returns, market.dates, market.symbols, decisions, 50, 10.0)
    changed = z.copy()
    changed[26:] = -changed[26:]
    again = simulate(TiltAllocator(market, changed, params, 5), market.returns, market.dates, market.symbols,
                     decisions, 50, 10.0)  # fmt: skip
    np.testing.assert_array_equal(run.weights.to_numpy()[:6], again.weights.to_numpy()[:6])  # decided at 0 .. 25
    assert not np.array_equal(run.weights.to_numpy()[6:], again.weights.to_numpy()[6:])


# ----- the card and the registry ---------------------------------------------------------------


def tilt_card(**params) -> TiltCard:
    return TiltCard(
        params=TiltParams(**{"k": 0.5, "band": 0.01, "cap": 0.25, **params}),
        horizon=20,
        rebalance_every=21,
        cost_bps=10.0,
        forecasters={"lstm-forecaster": "v0003", "gat-forecaster": "v0001"},
        symbols=("AAA", "BBB", "CCC"),
        calendar=CALENDAR,
    )


def _rewrite_card(path, edit) -> None:
    """Edit a stored card and fix its checksum too (a bug or an attacker that updates the manifest)."""
    raw = json.loads((path / CARD_FILE).read_text())
    edit(raw)
    (path / CARD_FILE).write_text(json.dumps(raw))
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][CARD_FILE] = sha256_file(path / CARD_FILE)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_a_tilt_card_round_trips_and_is_listed_among_the_allocators(tmp_path):
    card = tilt_card()
    assert card.name == "tilt-allocator" and card.kind == "tilt"
    assert CARD.validate_json(card.model_dump_json(), strict=True) == card
    registry = ModelRegistry(tmp_path)
    registry.register(allocator_card(), {WEIGHTS: {}}, metrics={"validation_sharpe": 0.4})
    assert register_tilt(registry, card, {"validation_sharpe": 0.9}) == ("v0001", "production")
    assert register_tilt(registry, tilt_card(k=1.0), {"validation_sharpe": 0.7}) == ("v0002", "staging")
    assert load_tilt(registry) == card
    assert [(v.name, v.card.kind) for v in registry.production(ALLOCATOR_KINDS)] == [
        ("ppo-allocator", "allocator"), ("tilt-allocator", "tilt")]  # fmt: skip
    assert [v.name for v in registry.production("allocator")] == ["ppo-allocator"]
    assert [v.name for v in registry.production("tilt")] == ["tilt-allocator"]
    assert best_allocator(registry) == "tilt-allocator"
    with pytest.raises(ValueError, match="validation_sharpe"):
        register_tilt(registry, card, {"sharpe": 1.0})
    with pytest.raises(RegistryError, match="not a tilt"):
        load_tilt(registry, "ppo-allocator")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["params"].update(cap=2.0), r"params\.cap.*less than or equal to 1"),
        (lambda c: c["params"].update(k="0.5"), r"params\.k.*valid number"),
        (lambda c: c.pop("forecasters"), r"forecasters.*Field required"),
        (lambda c: c.update(feature_names=["ret_1"]), r"feature_names.*Extra inputs"),
    ],
    ids=["cap-too-big", "string-k", "missing", "extra"],
)
def test_a_tampered_tilt_card_is_refused(edit, message, tmp_path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_tilt(registry, tilt_card(), {"validation_sharpe": 0.5})
    path = tmp_path / "tilt-allocator" / version
    _rewrite_card(path, edit)
    with pytest.raises(RegistryError, match=rf"not a valid card \(.*{message}"):
        load_tilt(registry)
    with pytest.raises(RegistryError, match="not a valid card"):
        registry.production(ALLOCATOR_KINDS)


def test_a_tilt_card_changed_behind_the_manifest_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    version, _ = register_tilt(registry, tilt_card(), {"validation_sharpe": 0.5})
    path = tmp_path / "tilt-allocator" / version / CARD_FILE
    path.write_text(path.read_text().replace('"k": 0.5', '"k": 5.0'))
    with pytest.raises(RegistryError, match="sha256 does not match"):
        load_tilt(registry)
