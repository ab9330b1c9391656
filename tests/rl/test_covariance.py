"""The shared Ledoit-Wolf estimator against scikit-learn's implementation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import ledoit_wolf

from rayfolio.rl.covariance import LedoitWolf, ShrunkCovariance


@pytest.mark.parametrize("days, n", [(252, 5), (60, 40), (30, 120)])  # the last two: N close to / above L
def test_shrunk_covariance_is_scikit_learns_ledoit_wolf(days, n):
    rng = np.random.default_rng(n)
    returns = rng.normal(0.0005, 0.01, (days, n)) + rng.normal(0, 0.01, (days, 1))  # one common factor
    expected, shrinkage = ledoit_wolf(returns)
    estimate = ShrunkCovariance.fit(returns)
    assert 0 < estimate.shrinkage < 1 and estimate.shrinkage == pytest.approx(shrinkage, rel=1e-10)
    np.testing.assert_allclose(estimate.matrix(), expected, rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(LedoitWolf().fit(returns).covariance_, expected, rtol=1e-10, atol=1e-16)
    for w in (rng.dirichlet(np.ones(n)), np.eye(n)[0], np.zeros(n)):  # w' Sigma w without Sigma
        assert estimate.variance(w) == pytest.approx(float(w @ expected @ w), rel=1e-10, abs=1e-20)
    assert np.linalg.eigvalsh(estimate.matrix()).min() >= shrinkage * np.trace(expected) / n * (1 - 1e-9) - 1e-12


def test_one_asset_is_its_sample_variance():
    returns = np.random.default_rng(0).normal(0, 0.02, (50, 1))
    estimate = ShrunkCovariance.fit(returns)
    assert estimate.matrix()[0, 0] == pytest.approx(np.var(returns), rel=1e-12)
