"""The planted signal of the synthetic generator: off, it changes nothing; on, its
oracle has the Rank IC asked for, is past-only, and slices like the rest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rayfolio.data.indicators import forward_log_return
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.synthetic import (
    SyntheticPanelConfig,
    generate_assets,
    innovation_signal,
    market_state,
    planted_coefficient,
    planted_signal,
    signal_persistence,
)
from rayfolio.training.metrics import daily_rank_ic

# The default config's hash before the planted fields existed (stores built then keep it).
DEFAULT_CONTENT_HASH = "eee9e661589ee5d74fb917872fa30d289340ca1032fccf7fb55084ecba4e2319"
# Values of SyntheticPanelConfig(n_assets=4, n_days=300, seed=5) from the generator before the
# planted signal (rows 0, 299, 300, 1199 of the long table: asset 0's first and last day, ...).
STORED_ROWS = [0, 299, 300, 1199]
STORED = {
    "open": [55.639121397521855, 70.15591243756512, 28.514922605586346, 76.65584974913898],
    "close": [54.165474530627435, 70.08352487110994, 28.588027915311585, 72.78132117035797],
    "volume": [1985360.0, 3387710.0, 1710956.0, 2583408.0],
}


def closes(cfg: SyntheticPanelConfig) -> np.ndarray:
    """(T, N) closes of the whole panel."""
    table = generate_assets(cfg, np.arange(cfg.n_assets))
    return table.column("close").to_numpy().reshape(cfg.n_assets, cfg.n_days).T


def test_no_planted_signal_is_the_generator_as_it_was():
    table = generate_assets(SyntheticPanelConfig(n_assets=4, n_days=300, seed=5), np.arange(4))
    for column, values in STORED.items():
        np.testing.assert_allclose(table.column(column).to_numpy()[STORED_ROWS], values, rtol=1e-13)
    assert SyntheticPanelConfig().content_hash() == DEFAULT_CONTENT_HASH
    assert SyntheticPanelConfig(planted_horizon=5).content_hash() == DEFAULT_CONTENT_HASH  # no signal, no matter
    planted = {SyntheticPanelConfig(planted_rank_ic=ic, planted_horizon=h).content_hash()
               for ic, h in ((0.05, 20), (0.1, 20), (0.05, 5))}  # fmt: skip
    assert len(planted) == 3 and DEFAULT_CONTENT_HASH not in planted


@pytest.mark.parametrize("target", [0.05, 0.1])
def test_oracle_rank_ic_at_the_horizon_is_the_target(target):
    # 300 x 4000: across seeds the mean daily Rank IC averages the target (0.1002 over 30 seeds)
    # with an sd of ~0.004, so +-0.01 tells a miscalibration from chance.
    cfg = SyntheticPanelConfig(n_assets=300, n_days=4000, seed=0, planted_rank_ic=target)
    close = closes(cfg)
    label = np.column_stack([forward_log_return(close[:, i], cfg.planted_horizon) for i in range(cfg.n_assets)])
    rank_ic = np.nanmean(daily_rank_ic(planted_signal(cfg, np.arange(cfg.n_assets)), label))
    assert rank_ic == pytest.approx(target, abs=0.01)


def test_without_a_planted_signal_the_oracle_predicts_nothing():
    cfg = SyntheticPanelConfig(n_assets=300, n_days=4000, seed=0, planted_horizon=20)
    close = closes(cfg)
    label = np.column_stack([forward_log_return(close[:, i], 20) for i in range(cfg.n_assets)])
    assert abs(np.nanmean(daily_rank_ic(planted_signal(cfg, np.arange(cfg.n_assets)), label))) < 0.01


def test_coefficient_depends_on_the_model_and_target_not_the_seed_or_length():
    cfg = SyntheticPanelConfig(n_assets=60, planted_rank_ic=0.05)
    c = planted_coefficient(cfg)
    assert c > 0
    assert planted_coefficient(replace(cfg, seed=11, n_days=900, start="2010-01-04")) == c
    assert planted_coefficient(replace(cfg, planted_rank_ic=0.1)) > c
    assert planted_coefficient(replace(cfg, planted_rank_ic=0.0)) == 0.0


def test_innovation_signal_is_a_past_only_unit_variance_ar1():
    rng = np.random.default_rng(0)
    innovations = rng.standard_normal(500)
    rho = signal_persistence(20)
    s = innovation_signal(innovations, rho)
    expected = [innovations[0]]  # the recursion written out
    for e in innovations[1:]:
        expected.append(rho * expected[-1] + np.sqrt(1 - rho**2) * e)
    np.testing.assert_allclose(s, expected, rtol=1e-12, atol=1e-14)
    for cut in (0, 100, 498):
        changed = innovations.copy()
        changed[cut + 1 :] = rng.standard_normal(len(changed) - cut - 1) * 10
        np.testing.assert_array_equal(innovation_signal(changed, rho)[: cut + 1], s[: cut + 1])
    many = innovation_signal(rng.standard_normal(200_000), rho)
    assert np.std(many) == pytest.approx(1.0, abs=0.02)
    assert np.corrcoef(many[:-20], many[20:])[0, 1] == pytest.approx(np.exp(-1.0), abs=0.02)  # rho^h = 1/e


def test_oracle_past_does_not_move_when_the_panel_runs_longer():
    cfg = SyntheticPanelConfig(n_assets=5, n_days=400, seed=2, planted_rank_ic=0.1)
    np.testing.assert_array_equal(
        planted_signal(replace(cfg, n_days=700), np.arange(5))[:400], planted_signal(cfg, np.arange(5))
    )


def test_tomorrows_return_loads_on_todays_signal_only():
    """Planted minus unplanted log return at t = c * idio_vol * regime_scale(t-1) * s(t-1):
    a positive multiple of yesterday's signal that takes one value per regime (their ratio
    the stressed multiplier)."""
    cfg = SyntheticPanelConfig(n_assets=4, n_days=600, seed=1, planted_rank_ic=0.1, planted_horizon=10)
    extra = np.diff(np.log(closes(cfg)) - np.log(closes(replace(cfg, planted_rank_ic=0.0))), axis=0)  # (T-1, N): t=1..
    signal = planted_signal(cfg, np.arange(4))[:-1]  # (T-1, N): s(t-1)
    stressed = market_state(cfg).stressed[:-1]
    ratio = extra / signal  # c * idio_vol * scale
    assert (ratio > 0).all()
    for i in range(4):
        calm, stress = ratio[~stressed, i], ratio[stressed, i]
        np.testing.assert_allclose(calm, calm[0], rtol=1e-6)
        np.testing.assert_allclose(stress, cfg.stressed_vol_multiplier * calm[0], rtol=1e-6)


def test_slices_generate_the_same_series_as_the_whole():
    cfg = SyntheticPanelConfig(n_assets=7, n_days=300, seed=5, planted_rank_ic=0.1, planted_horizon=5)
    whole = generate_assets(cfg, np.arange(7)).to_pandas()
    by_three = pd.concat(SyntheticSource(cfg, assets_per_unit=3).read_unit(u).to_pandas() for u in range(0, 7, 3))
    pd.testing.assert_frame_equal(
        by_three[whole.columns].reset_index(drop=True), whole, check_dtype=False, check_exact=True
    )
    oracle = planted_signal(cfg, np.arange(7))
    np.testing.assert_array_equal(np.hstack([planted_signal(cfg, np.arange(0, 3)), planted_signal(cfg, [3, 4, 5, 6])]),
                                  oracle)  # fmt: skip


def test_an_unreachable_rank_ic_is_refused_in_one_line():
    source = SyntheticSource(SyntheticPanelConfig(n_assets=50, planted_rank_ic=0.95, planted_horizon=5))
    with pytest.raises(PanelValidationError, match=r"synthetic\(.*planted_rank_ic 0.95 is out of reach.*horizon 5"):
        source.preflight()
