"""The estimator baselines as Ray tasks: the same backtests as one after another in this process."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayfolio.rl.estimator_runs import finish_estimators, most_at_once, start_estimators
from tests.rl.conftest import hand_market


def test_estimators_on_ray_match_the_sequential_run(ray_session):
    market = hand_market(np.random.default_rng(0).normal(0.0003, 0.01, (100, 6)))
    period = (70, 90)  # four monthly-like refits every 5 days on 60 days of history
    here = finish_estimators(start_estimators(market, 5, 60, period, 10.0, on_ray=False))
    remote = finish_estimators(start_estimators(market, 5, 60, period, 10.0, on_ray=True))
    assert list(remote.runs) == list(here.runs) == ["min_variance", "max_sharpe", "hrp"]
    for name, run in here.runs.items():
        pd.testing.assert_series_equal(remote.runs[name].returns, run.returns)
        pd.testing.assert_frame_equal(remote.runs[name].weights, run.weights)
    assert remote.failures == here.failures
    assert all(len(run.weights) == 4 for run in here.runs.values())
    assert remote.on_ray and not here.on_ray and here.at_once == 1 and 1 <= remote.at_once <= 3
    assert f"{remote.at_once} at once" in remote.note() and "Ray tasks" in remote.note()


def test_most_at_once_counts_overlaps():
    assert most_at_once([]) == 0
    assert most_at_once([(0, 1), (1, 2), (2, 3)]) == 1  # one ends as the next starts
    assert most_at_once([(0, 4), (1, 2), (1.5, 3), (3.5, 5)]) == 3
