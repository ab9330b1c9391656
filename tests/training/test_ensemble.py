"""The forecaster ensemble: IC weights, Grinold expected returns, agreement
as confidence, no look-ahead, and loading verified models from the registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.cards import ForecasterCard, NormalizerParams
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import ForecastEnsemble, Forecaster, load_forecasters
from rayfolio.training.models import build_model
from rayfolio.training.panel import Normalizer, Panel
from rayfolio.training.registry import WEIGHTS, ModelRegistry, RegistryError
from tests.training.card_examples import CALENDAR


@pytest.fixture(scope="module")
def panel() -> Panel:
    frame = build_features_local(SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=400, seed=4)), (5, 20))
    return Panel.from_frame(frame, tuple(f.name for f in FEATURES if f.name in frame.columns), (5, 20))


def tiny(family: str, panel: Panel, seed: int) -> tuple[TrainConfig, torch.nn.Module]:
    torch.manual_seed(seed)
    config = TrainConfig(family=family, hidden=8, window=10, layers=1)
    return config, build_model(family, config.model_kwargs(len(panel.feature_names), len(panel.horizons))).eval()


def forecaster(name: str, panel: Panel, ic: list[float], seed: int, normalizer: Normalizer | None = None) -> Forecaster:
    config, model = tiny("lstm", panel, seed)
    normalizer = normalizer or Normalizer.fit(panel.features[:350])  # stands in for the training split's
    no_graph = np.zeros((len(panel.dates), len(panel.symbols), 2), np.int64)
    scaled = normalizer.transform(panel.features)
    return Forecaster(name, "v0001", model, config.window, scaled, no_graph, panel.horizons, np.array(ic))


def test_weights_follow_validation_ic_and_expected_returns_follow_grinold(panel):
    ensemble = ForecastEnsemble([forecaster("a", panel, [0.03, -0.01], 0), forecaster("b", panel, [0.01, -0.02], 1)],
                                panel)  # fmt: skip
    np.testing.assert_allclose(ensemble.weights, [[0.75, 0.5], [0.25, 0.5]])  # no positive IC at h=20: equal
    np.testing.assert_allclose(ensemble.ic, [0.75 * 0.03 + 0.25 * 0.01, 0.0])
    f = ensemble.forecast(300)
    z = {k: (s - s.mean(0)) / s.std(0) for k, s in f.scores.items()}
    np.testing.assert_allclose(f.z[:, 0], 0.75 * z["a"][:, 0] + 0.25 * z["b"][:, 0], rtol=1e-5)
    # h=20 has no skill: the expected return is the trailing mean for every asset.
    assert np.ptp(f.expected_return[:, 1]) == pytest.approx(0.0, abs=1e-12)
    mean, spread = ensemble._trailing(300)
    np.testing.assert_allclose(f.expected_return[:, 0], mean[0] + ensemble.ic[0] * spread[0] * f.z[:, 0])
    assert ((f.confidence > 0) & (f.confidence <= 1)).all()


def test_one_model_or_agreeing_models_are_fully_confident(panel):
    one = forecaster("a", panel, [0.02, 0.02], 0)
    assert (ForecastEnsemble([one], panel).forecast(300).confidence == 1.0).all()
    twin = dataclasses.replace(one, name="b")
    np.testing.assert_allclose(ForecastEnsemble([one, twin], panel).forecast(300).confidence, 1.0)


def test_forecasts_at_t_use_no_data_after_t(panel):
    t = 250
    normalizer = Normalizer.fit(panel.features[:350])  # stored with the model: fixed
    before = ForecastEnsemble([forecaster("a", panel, [0.02, 0.01], 0, normalizer)], panel).forecast(t)
    features = panel.features.copy()
    features[t + 1 :] = np.random.default_rng(0).normal(size=features[t + 1 :].shape)
    changed = dataclasses.replace(panel, features=features)
    after = ForecastEnsemble([forecaster("a", changed, [0.02, 0.01], 0, normalizer)], changed).forecast(t)
    np.testing.assert_allclose(before.expected_return, after.expected_return, rtol=1e-6)
    assert [f.date for f in ForecastEnsemble([forecaster("a", panel, [0.02, 0.01], 0)], panel).forecast_many(
        [t, t + 5])] == [panel.dates[t], panel.dates[t + 5]]  # fmt: skip


def test_production_forecasters_load_from_the_registry_verified(panel, tmp_path):
    registry = ModelRegistry(tmp_path)
    config, model = tiny("gat", panel, 0)
    normalizer = Normalizer.fit(panel.features[:350])
    metrics = {"by_split_and_horizon": [{"split": "validation", "horizon": 5, "rank_ic": 0.04},
                                        {"split": "validation", "horizon": 20, "rank_ic": 0.01}]}  # fmt: skip
    graph = {"graph_k": 3, "graph_lookback": 20, "graph_sector_k": 0}
    card = ForecasterCard(train=config.model_copy(update=graph), feature_names=panel.feature_names, horizons=(5, 20),
                          normalizer=NormalizerParams.of(normalizer), symbols=tuple(panel.symbols.tolist()),
                          calendar=CALENDAR)  # fmt: skip
    version = registry.register(card, {WEIGHTS: model.state_dict()}, metrics=metrics)
    assert registry.stage_of(version) == "production"
    loaded = load_forecasters(registry, panel)
    assert [(f.name, f.version) for f in loaded] == [("gat-forecaster", "v0001")]
    np.testing.assert_allclose(loaded[0].val_rank_ic, [0.04, 0.01])
    forecast = ForecastEnsemble(loaded, panel).forecast(300)
    with torch.no_grad():
        x = torch.from_numpy(loaded[0].scaled[291:301][None])
        direct = model(x, torch.from_numpy(loaded[0].neighbours[[300]])).numpy()[0]
    np.testing.assert_allclose(forecast.scores["gat-forecaster"], direct, rtol=1e-5)
    assert loaded[0].neighbours.shape == (len(panel.dates), len(panel.symbols), 3)  # the card's graph k
    assert [f.name for f in load_forecasters(registry, panel, ["gat-forecaster"])] == ["gat-forecaster"]
    (version.path / "weights.pt").write_bytes(b"not the model")
    with pytest.raises(RegistryError, match="sha256 does not match"):
        load_forecasters(registry, panel)
    with pytest.raises(RegistryError, match="no production forecaster"):
        load_forecasters(ModelRegistry(tmp_path / "empty"), panel)
