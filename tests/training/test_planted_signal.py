"""The planted-signal check (issue 15): on a synthetic panel with a known predictive component
the learning machinery must find it, and on the same panel without it find nothing. A network
that loses to the baselines on real data may be untrained; here it has something to learn.

The panel goes through the real path (synthetic source -> features -> Panel -> purged splits
-> ``prepare_training_data``): 100 assets x 2000 business days, planted Rank IC 0.1 at h = 20
trading days. 0.1, not 0.05: on ~550 test days of overlapping 20-day labels, at 0.05 ridge's t
is ~4 and the LSTM's would sit near 3, so its t > 3 bar would be a coin toss. t-statistics are
Newey-West with lag h - 1, the least that spans the labels' overlap (training/significance.py
finds it slightly liberal; the figures at lag 2h are reported with the issue).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest

from rayfolio.data.features import available_features
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.synthetic import SyntheticPanelConfig, planted_signal, symbol_name
from rayfolio.rl.backtest import StrategyRun, run_backtest
from rayfolio.rl.baselines import EqualWeight
from rayfolio.rl.config import EnvConfig, TiltParams
from rayfolio.rl.market import MarketData
from rayfolio.rl.measures import sharpe
from rayfolio.rl.tilt import TiltAllocator
from rayfolio.training.baselines import RidgeBaseline
from rayfolio.training.config import ScalingOptions, TrainConfig
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.panel import Panel, sample_dates
from rayfolio.training.significance import MeanTest, newey_west_mean, sharpe_difference
from rayfolio.training.train import TrainingData, predict, prepare_training_data, train_forecaster

H = 20  # the planted horizon and the only label horizon
PLANTED = 0.1
LAG = H - 1
# 2000 business days from 2000-01-03 end in August 2007: ~1130 training, ~240 validation and
# ~550 test dates after the purges.
SPLITS = SplitConfig(
    train_end=dt.date(2004, 6, 30),
    validation_start=dt.date(2004, 7, 1),
    validation_end=dt.date(2005, 6, 30),
    test_start=dt.date(2005, 7, 1),
)
LSTM = TrainConfig(family="lstm", hidden=16, window=20, epochs=6, batch_size=32, patience=2, seed=0)


@dataclass(frozen=True)
class Case:
    """One panel through the pipeline, and its test dates (indices with a label)."""

    config: SyntheticPanelConfig
    panel: Panel
    splitter: PurgedDateSplitter
    data: TrainingData
    test_idx: np.ndarray

    def rank_ic(self, scores: np.ndarray) -> MeanTest:
        """Newey-West test of the mean daily Rank IC of scores (len(test_idx), N) at h."""
        return newey_west_mean(daily_rank_ic(scores, self.panel.labels[self.test_idx, :, 0]), LAG)


def build_case(planted_rank_ic: float) -> Case:
    config = SyntheticPanelConfig(n_assets=100, n_days=2000, seed=0, planted_rank_ic=planted_rank_ic)
    source = SyntheticSource(config)
    names = tuple(f.name for f in available_features(source.value_columns))
    panel = Panel.from_frame(build_features_local(source, (H,)), names, (H,))
    # Panel columns in asset order, so the oracle's columns line up with them.
    assert list(panel.symbols) == [symbol_name(i, config) for i in range(config.n_assets)]
    splitter = PurgedDateSplitter(SPLITS, purge=H)
    data = prepare_training_data(panel, splitter, LSTM)
    test_idx = sample_dates(panel, splitter.split_dates(panel.dates)["test"], LSTM.window)
    return Case(config, panel, splitter, data, test_idx)


@pytest.fixture(scope="module")
def planted() -> Case:
    return build_case(PLANTED)


@pytest.fixture(scope="module")
def control() -> Case:
    return build_case(0.0)


@pytest.fixture(scope="module")
def planted_ridge(planted) -> RidgeBaseline:
    return RidgeBaseline().fit(planted.data)


@pytest.fixture(scope="module")
def control_ridge(control) -> RidgeBaseline:
    return RidgeBaseline().fit(control.data)


def tilt_against_equal_weight(case: Case, ridge: RidgeBaseline) -> tuple[StrategyRun, StrategyRun]:
    """Over the test split: w_i ~ 1 + k z_i around 1/N on the ridge forecasts' cross-sectional
    z-scores (k = 1), and 1/N, both rebalanced every 20 days paying 10 bps per unit of turnover."""
    scores = ridge.predict(case.data, np.arange(len(case.panel.dates)))[..., 0]  # (T, N), from data <= t
    z = (scores - scores.mean(axis=1, keepdims=True)) / scores.std(axis=1, keepdims=True)
    market = MarketData.from_panel(case.panel, case.splitter, EnvConfig())
    tilt = TiltAllocator(market, z, TiltParams(k=1.0, band=0.0, cap=0.25), horizon=H)
    runs = run_backtest([tilt, EqualWeight(market, H)], market, market.splits["test"], every=H, cost_bps=10.0)
    return runs["tilt"], runs["equal_weight"]


def test_the_test_split_shows_the_oracle_its_planted_rank_ic(planted):
    oracle = planted_signal(planted.config, np.arange(planted.config.n_assets))[planted.test_idx]
    result = planted.rank_ic(oracle)
    assert 0.5 * PLANTED <= result.mean <= 1.5 * PLANTED and result.t > 3, result


def test_ridge_recovers_the_planted_signal(planted, planted_ridge):
    result = planted.rank_ic(planted_ridge.predict(planted.data, planted.test_idx)[..., 0])
    assert 0.5 * PLANTED <= result.mean <= 1.5 * PLANTED and result.t > 3, result


def test_ridge_finds_nothing_without_a_planted_signal(control, control_ridge):
    result = control.rank_ic(control_ridge.predict(control.data, control.test_idx)[..., 0])
    assert abs(result.t) < 2, result


@pytest.mark.slow
def test_an_lstm_trained_on_ray_train_recovers_the_planted_signal(planted, ray_session, tmp_path):
    trained = train_forecaster(planted.data, LSTM, ScalingOptions(num_workers=1), tmp_path, "planted-lstm")
    result = planted.rank_ic(predict(trained.model, planted.data, planted.test_idx, LSTM.window)[..., 0])
    assert 0.5 * PLANTED <= result.mean <= 1.5 * PLANTED and result.t > 3, (result, trained.epochs_run)


def test_a_tilt_on_ridge_forecasts_beats_equal_weight_after_costs(planted, planted_ridge):
    tilt, equal = tilt_against_equal_weight(planted, planted_ridge)
    assert tilt.costs.sum() > equal.costs.sum()  # the tilt pays for its trades
    a, b = tilt.returns.to_numpy(), equal.returns.to_numpy()
    test = sharpe_difference(a, b)  # paired (Ledoit-Wolf): both trade the same days
    assert sharpe(a) > sharpe(b) and test.p_greater < 0.05, test


def test_without_a_planted_signal_the_tilt_does_not_beat_equal_weight(control, control_ridge):
    tilt, equal = tilt_against_equal_weight(control, control_ridge)
    test = sharpe_difference(tilt.returns.to_numpy(), equal.returns.to_numpy())
    assert test.p_greater > 0.05, test
