"""SHAP attributions: they add up (with the base value) to the explained value,
they are grouped by feature, and the rationale names the main drivers."""

from __future__ import annotations

import numpy as np
import pytest

from rayfolio.explain.attributions import HOLDINGS, OTHER_ASSETS, explain_ensemble, explain_policy
from rayfolio.explain.rationale import DISCLAIMER, describe, rationale, themes
from tests.serving.conftest import make_engine, make_panel


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return make_engine(make_panel(), tmp_path_factory.mktemp("explain") / "audit.db")


def test_expected_return_attributions_add_up_to_the_prediction(engine):
    t = 600
    background = np.arange(300, 400, 5)
    names = engine.panel.feature_names
    explained = explain_ensemble(engine.ensemble, t, 20, background, names, nsamples=1500)
    np.testing.assert_allclose(explained.values, engine.ensemble.forecast(t).expected_return[:, 1], rtol=1e-5)
    assert explained.groups[-1] == OTHER_ASSETS and explained.contributions.shape == (6, len(names) + 1)
    total = explained.base_values + explained.contributions.sum(axis=1)
    spread = np.ptp(explained.values) + 1e-12
    np.testing.assert_allclose(total, explained.values, atol=0.1 * spread)  # expected gradients: sampling error only


def test_policy_weight_attributions_add_up_to_the_weight(engine):
    t = 600
    current = np.array([0.2, 0.0, 0.1, 0.0, 0.0, 0.0, 0.7])
    explained = explain_policy(engine.allocator, t, current, np.arange(300, 400, 5), nsamples=1500)
    weights = engine.allocator.decide(t, current)
    np.testing.assert_allclose(explained.values, weights[:-1], atol=1e-5)
    assert explained.groups[-2:] == (OTHER_ASSETS, HOLDINGS)
    total = explained.base_values + explained.contributions.sum(axis=1)
    np.testing.assert_allclose(total, explained.values, atol=0.03)


def test_rationale_names_the_two_main_drivers():
    groups = ("ret_20", "rsi_14", "vol_20", OTHER_ASSETS)
    by_theme = themes(groups, np.array([0.004, -0.001, 0.0005, -0.002]))
    assert by_theme == pytest.approx({"momentum": 0.004, "RSI": -0.001, "volatility": 0.0005, "other assets": -0.002})
    text = rationale("AAPL", "expected 20-day return", 0.012, by_theme, {"ret_20": 0.05, "rsi_14": 75.0})
    assert text.startswith("AAPL: expected 20-day return +1.20%. Main drivers: momentum (20-day return +5.1%) raised")
    assert "related assets" in text and "lowered" in text
    assert describe("RSI", -0.1, {"rsi_14": 25.0}) == "RSI 25 (oversold) lowered it"
    assert "not investment advice" in DISCLAIMER
