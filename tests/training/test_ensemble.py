"""The forecaster ensemble: IC weights, Grinold expected returns, agreement
as confidence, no look-ahead, and loading verified models from the registry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rayfolio.data.features import FEATURES
from rayfolio.data.graph import correlation_neighbours, sector_neighbours
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.cards import ForecasterCard, NormalizerParams
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import (
    Calibration,
    ForecastEnsemble,
    Forecaster,
    combine,
    direction_hits,
    load_forecasters,
    member_graph,
    member_weights,
    seed_file,
    zscore,
)
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
    return Forecaster(name, "v0001", (model,), config.window, scaled, no_graph, panel.horizons, np.array(ic))


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
    assert np.isnan(f.confidence).all()  # not calibrated: no confidence is claimed
    calibrated = ForecastEnsemble(ensemble.forecasters, panel, np.arange(250, 350)).forecast(300)
    assert ((calibrated.confidence >= 0) & (calibrated.confidence <= 1)).all()
    np.testing.assert_array_equal(calibrated.z, f.z)


def test_one_model_or_agreeing_models_agree_fully_and_earn_the_validation_hit_rate(panel):
    one = forecaster("a", panel, [0.02, 0.02], 0)
    validation = np.arange(250, 350)
    single = ForecastEnsemble([one], panel, validation)
    assert (single.forecast(300).agreement == 1.0).all()
    z = np.stack([single.forecast(t).z for t in validation])
    overall = np.nanmean(direction_hits(z, panel.labels[validation].astype(np.float64)), axis=(0, 1))
    np.testing.assert_allclose(single.forecast(300).confidence, np.broadcast_to(overall, (6, 2)))
    twin = dataclasses.replace(one, name="b")
    np.testing.assert_allclose(ForecastEnsemble([one, twin], panel).forecast(300).agreement, 1.0)


def test_combine_and_agreement_by_hand():
    scores = np.array([[[1.0], [2.0], [3.0]], [[3.0], [2.0], [1.0]]])  # (M=2, N=3, H=1): opposite views
    z, agreement = combine(scores, np.array([[0.75], [0.25]]))
    unit = np.sqrt(1.5)  # z of (1, 2, 3) is (-1, 0, 1) * sqrt(3/2)
    np.testing.assert_allclose(z[:, 0], [-0.5 * unit, 0.0, 0.5 * unit])
    np.testing.assert_allclose(agreement[:, 0], [0.5, 1.0, 0.5])  # |0.75 - 0.25| / (0.75 + 0.25); no view: 1
    np.testing.assert_allclose(member_weights(np.array([[0.03, -0.01], [0.01, -0.02]])), [[0.75, 0.5], [0.25, 0.5]])


def test_calibration_buckets_hit_rates_and_keeps_them_monotone():
    # Two buckets of agreement; the low one hits 3/4, the high one 1/4: pooled to 1/2 each (no inversion).
    agreement = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])[None, :, None]  # (D=1, N=8, H=1)
    z = np.ones((1, 8, 1))
    labels = np.array([1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0])[None, :, None] + 0.01 * np.arange(8)[None, :, None]
    c = Calibration.fit(z, agreement, labels, buckets=2)
    np.testing.assert_allclose(c.count, [[4, 4]])
    np.testing.assert_allclose(c.hit_rate, [[0.5, 0.5]])
    increasing = Calibration.fit(z, agreement, labels[:, ::-1], buckets=2)  # low bucket 1/4, high 3/4: kept
    np.testing.assert_allclose(increasing.hit_rate, [[0.25, 0.75]])
    np.testing.assert_allclose(increasing.confidence(np.array([[0.05], [0.95]])), [[0.25], [0.75]])


def test_a_date_forecasts_the_same_bits_alone_in_a_batch_and_in_the_strategies_signal(panel):
    ensemble = ForecastEnsemble([forecaster("a", panel, [0.03, 0.01], 0), forecaster("b", panel, [0.01, 0.02], 1)],
                                panel)  # fmt: skip
    alone = ensemble.forecast(300)
    fresh = ForecastEnsemble(ensemble.forecasters, panel)  # nothing cached
    batched = {f.date: f for f in fresh.forecast_many([290, 300, 310])}[panel.dates[300]]
    np.testing.assert_array_equal(alone.z, batched.z)
    np.testing.assert_array_equal(alone.expected_return, batched.expected_return)
    np.testing.assert_array_equal(ForecastEnsemble(ensemble.forecasters, panel).z_panel(np.array([300, 301]))[300],
                                  alone.z)  # fmt: skip


def test_seeds_of_a_member_are_averaged_before_the_z_score(panel):
    a, b = forecaster("a", panel, [0.02, 0.02], 0), forecaster("a", panel, [0.02, 0.02], 1)
    both = dataclasses.replace(a, models=(a.models[0], b.models[0]))
    np.testing.assert_allclose(both.scores(300), (a.scores(300) + b.scores(300)) / 2)


def test_the_explainer_twin_equals_the_ensemble(panel):
    from rayfolio.explain.attributions import EnsembleReturn

    members = [forecaster("a", panel, [0.03, 0.01], 0), forecaster("b", panel, [0.01, 0.02], 1)]
    second = forecaster("b", panel, [0.01, 0.02], 2)
    members[1] = dataclasses.replace(members[1], models=(members[1].models[0], second.models[0]))
    ensemble = ForecastEnsemble(members, panel)
    rng = np.random.default_rng(0)
    for t in rng.integers(60, 390, 5).tolist():
        for h in range(2):
            x = torch.from_numpy(members[0].scaled[t - 9 : t + 1][None])
            twin = EnsembleReturn(ensemble, t, h)(x).detach().numpy()[0]
            np.testing.assert_allclose(twin, ensemble.forecast(t).expected_return[:, h], atol=1e-6)
    # Random inputs: the twin's z-scoring is the numpy one's.
    module = EnsembleReturn(ensemble, 300, 0)
    x = torch.from_numpy(rng.normal(size=(3, 10, 6, len(panel.feature_names))).astype(np.float32))
    with torch.no_grad():
        scores = np.stack(
            [
                np.mean(
                    [m(x, torch.from_numpy(f.neighbours[[300] * 3]))[..., 0].double().numpy() for m in f.models], axis=0
                )
                for f in members
            ]
        )  # (M, B, N)
    mean, dispersion = ensemble._trailing(300)
    expected = mean[0] + ensemble.ic[0] * dispersion[0] * np.einsum("m,mbn->bn", ensemble.weights[:, 0],
                                                                     zscore(scores[..., None])[..., 0])  # fmt: skip
    np.testing.assert_allclose(module(x).detach().numpy(), expected, atol=1e-6)


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


def test_a_member_registered_with_several_seeds_loads_them_all(panel, tmp_path):
    registry = ModelRegistry(tmp_path)
    config, first = tiny("lstm", panel, 0)
    _, second = tiny("lstm", panel, 1)
    normalizer = Normalizer.fit(panel.features[:350])
    card = ForecasterCard(train=config, feature_names=panel.feature_names, horizons=(5, 20),
                          normalizer=NormalizerParams.of(normalizer), symbols=tuple(panel.symbols.tolist()),
                          calendar=CALENDAR)  # fmt: skip
    registry.register(card, {WEIGHTS: first.state_dict(), seed_file(1): second.state_dict()}, metrics={})
    (member,) = load_forecasters(registry, panel)
    assert len(member.models) == 2
    alone = [dataclasses.replace(member, models=(m,)).scores(300) for m in member.models]
    np.testing.assert_allclose(member.scores(300), (alone[0] + alone[1]) / 2)
    assert not np.allclose(alone[0], alone[1])


def test_walk_forward_ensemble_forecasts_each_date_with_the_refit_that_owned_it(panel):
    from rayfolio.training.ensemble import reliability_table
    from rayfolio.training.walk_forward_ensemble import WalkForwardEnsemble

    early = ForecastEnsemble([forecaster("a", panel, [0.03, 0.02], 0)], panel, np.arange(200, 260))
    late = ForecastEnsemble([forecaster("a", panel, [0.03, 0.02], 7)], panel, np.arange(260, 300))
    walk = WalkForwardEnsemble([(260, early), (300, late)])
    # Before the second refit's segment the first refit forecasts (also before its own segment: its
    # validation dates), from the second segment on the second one does.
    for t, owner in ((250, early), (299, early), (300, late), (390, late)):
        np.testing.assert_array_equal(walk.forecast(t).z, owner.forecast(t).z)
        np.testing.assert_array_equal(walk.forecast(t).confidence, owner.forecast(t).confidence)
    z = walk.z_panel(np.arange(290, 310))
    np.testing.assert_array_equal(z[295], early.forecast(295).z)
    np.testing.assert_array_equal(z[305], late.forecast(305).z)
    assert not np.allclose(early.forecast(305).z, late.forecast(305).z)  # the two refits differ
    assert walk.forecasters is late.forecasters  # what the service runs now
    # Each date's confidence comes from its own refit's calibration.
    table = reliability_table(walk, np.arange(280, 320), 5)
    assert table["forecasts"].sum() > 0


def test_only_a_gat_member_builds_the_correlation_graph(panel, monkeypatch):
    """A GAT keeps its graph exactly (correlation then sector peers); an LSTM or Transformer, which
    never read it, get self-loops of the same width (one call signature, as ONNX graphs declare) and
    the O(T N^2 L) correlation graph is not built for them."""
    graph = {"graph_k": 3, "graph_lookback": 20, "graph_sector_k": 2}

    def card(family: str) -> ForecasterCard:
        config, _ = tiny(family, panel, 0)
        return ForecasterCard(train=config.model_copy(update=graph), feature_names=panel.feature_names,
                              horizons=(5, 20), normalizer=NormalizerParams.of(Normalizer.fit(panel.features[:350])),
                              symbols=tuple(panel.symbols.tolist()), calendar=CALENDAR)  # fmt: skip

    returns = panel.features[..., panel.feature_names.index("ret_1")]
    by_sector = sector_neighbours(panel.sectors, 2)
    expected = np.concatenate([correlation_neighbours(returns, 3, 20),
                               np.broadcast_to(by_sector, (len(panel.dates), *by_sector.shape))], axis=2)  # fmt: skip
    gat = member_graph(card("gat"), panel)
    np.testing.assert_array_equal(gat, expected)
    assert gat.dtype == np.int64 and (gat[100] != np.arange(6)[:, None]).any()

    def not_for_this_family(*args, **kwargs):
        raise AssertionError("the correlation graph was built for a model that never reads it")

    monkeypatch.setattr("rayfolio.training.ensemble.correlation_neighbours", not_for_this_family)
    for family in ("lstm", "transformer"):
        loops = member_graph(card(family), panel)
        assert loops.shape == gat.shape and loops.dtype == np.int64 and loops.flags.writeable
        assert (loops == np.arange(6)[None, :, None]).all()
        _, model = tiny(family, panel, 0)
        x = torch.from_numpy(Normalizer.fit(panel.features[:350]).transform(panel.features)[291:301][None])
        with torch.no_grad():  # the model's forecast is the same whichever graph it is handed
            torch.testing.assert_close(model(x, torch.from_numpy(loops[[300]])), model(x, torch.from_numpy(gat[[300]])),
                                       rtol=0, atol=0)  # fmt: skip
