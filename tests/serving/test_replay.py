"""The served path as a backtest strategy: the service's own pipeline, replayed in process.
(The same dates through a running Serve app over HTTP: tests/serving/test_app.py.)"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from bench.tiny_market import ENV, tiny_settings
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.rl.backtest import rebalance_dates, simulate
from rayfolio.serving.allocator import load_proposer
from rayfolio.serving.deployments import Ensemble, load_panel, validation_dates
from rayfolio.serving.explainer import Explainer
from rayfolio.serving.market import LOOKBACK
from rayfolio.serving.replay import ServedStrategy, replay_pipeline, replay_request, weights_of
from rayfolio.serving.risk import HouseLimits, RiskProfile, apply_risk_filters
from rayfolio.serving.schemas import RiskProfileIn
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry


@dataclasses.dataclass
class Recorder:
    """A strategy wrapper that keeps every (date, current weights) it was asked with."""

    inner: ServedStrategy
    calls: list = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.inner.name

    def decide(self, t, weights):
        self.calls.append((t, weights.copy()))
        return self.inner.decide(t, weights)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    settings = tiny_settings(root, house_limits=HouseLimits(max_position=0.3))
    panel = load_panel(settings)
    return settings, panel, root


def pipeline_for(settings, panel: Panel, root, name: str):
    registry = ModelRegistry(settings.registry)
    ensemble = ForecastEnsemble(load_forecasters(registry, panel), panel, validation_dates(settings, panel))
    return replay_pipeline(registry, panel, ensemble, settings.allocator, settings.house_limits,
                           root / f"{name}.db", splits=settings.splits)  # fmt: skip


def replay(settings, panel, root, profile: RiskProfileIn, until: int | None = None, name: str = "audit"):
    pipeline = pipeline_for(settings, panel, root, name)
    strategy = Recorder(ServedStrategy("served_test", pipeline, profile))
    first = pipeline.market.first_servable + 1
    last = until if until is not None else len(panel.dates) - 1
    decisions = rebalance_dates(first, last, 5)
    run = simulate(strategy, pipeline.market.returns, panel.dates, panel.symbols, decisions, last, 10.0)
    return pipeline, strategy, run


def test_a_binding_cap_changes_the_backtests_weights_exactly_as_the_services_filters(tiny):
    settings, panel, root = tiny
    profile = RiskProfileIn(risk_tolerance=0.5, max_position=0.1)  # 6 assets: 1/6 > 0.1 binds
    pipeline, strategy, run = replay(settings, panel, root, profile, until=pipeline_date(panel, 40))
    proposer, _ = load_proposer(ModelRegistry(settings.registry), settings.allocator, panel, settings.splits)
    t, current = strategy.calls[2]  # a known date, holding the drifted portfolio of two rebalances
    forecast = pipeline.forecasts.get_now([t])[0]
    (proposal,) = proposer.propose_many([t], [current], [forecast])
    assert proposal[:-1].max() > 0.1  # the policy alone would break the cap here
    state = pipeline.market.state(t)
    filtered, checks = apply_risk_filters(proposal, current, RiskProfile(0.5, 0.1, ()), settings.house_limits, state)
    target = run.weights.loc[np.datetime64(panel.dates[t], "ns")].to_numpy()
    np.testing.assert_array_equal(target, filtered)
    assert target[:-1].max() <= 0.1 + 1e-12 and {c.name: c.changed for c in checks}["max_position"]
    # ... and as the pipeline answers the request itself (the JSON a client sends).
    response = pipeline.recommend_offline([replay_request(pipeline.market, t, current, profile)], "k")[0]
    np.testing.assert_array_equal(weights_of(pipeline.market.symbols, response.target_weights), target)
    assert {c.name: c.changed for c in response.checks}["max_position"]


def pipeline_date(panel: Panel, days_after_first_servable: int) -> int:
    return LOOKBACK - 1 + days_after_first_servable  # the tiny models' windows are shorter than a year


def test_the_served_path_never_looks_ahead(tiny):
    settings, panel, root = tiny
    profile = RiskProfileIn(risk_tolerance=0.9)
    t = pipeline_date(panel, 60)
    _, _, before = replay(settings, panel, root, profile, until=len(panel.dates) - 1, name="before")
    rng = np.random.default_rng(0)
    features = panel.features.copy()
    features[t + 1 :] = rng.permutation(features[t + 1 :], axis=0)  # the future scrambled
    scrambled = dataclasses.replace(panel, features=features)
    _, _, after = replay(settings, scrambled, root, profile, until=len(panel.dates) - 1, name="after")
    upto = before.weights.index <= np.datetime64(panel.dates[t], "ns")
    assert upto.sum() >= 5
    np.testing.assert_array_equal(before.weights[upto].to_numpy(), after.weights[upto].to_numpy())
    assert not np.array_equal(before.weights[~upto].to_numpy(), after.weights[~upto].to_numpy())


def test_the_ensemble_is_bit_identical_in_the_backtest_the_service_and_the_explainer(tiny):
    settings, panel, _ = tiny
    registry = ModelRegistry(settings.registry)
    backtest = ForecastEnsemble(load_forecasters(registry, panel), panel, validation_dates(settings, panel))
    plain = settings.model_dump(mode="json")
    service, explainer = Ensemble(plain), Explainer(plain)
    dates = [300, 450, 600]
    signal = backtest.z_panel(np.array(dates))
    served = asyncio.run(service._forecast_many(dates))
    for t, forecast in zip(dates, served, strict=True):
        np.testing.assert_array_equal(signal[t], forecast.z)
        reference = backtest.forecast(t)
        np.testing.assert_array_equal(reference.expected_return, forecast.expected_return)
        np.testing.assert_array_equal(reference.confidence, forecast.confidence)
        np.testing.assert_array_equal(explainer.ensemble.forecast(t).z, forecast.z)
        for mine, theirs in zip(backtest.forecasters, explainer.ensemble.forecasters, strict=True):
            np.testing.assert_array_equal(mine.scaled[t - mine.window + 1 : t + 1],
                                          theirs.scaled[t - theirs.window + 1 : t + 1])  # fmt: skip


def test_the_tilt_is_servable_and_proposes_what_the_backtests_tilt_decides(tiny, tmp_path):
    import shutil

    from rayfolio.rl.config import TiltParams
    from rayfolio.rl.market import MarketData
    from rayfolio.rl.tilt import TiltAllocator, register_tilt
    from rayfolio.serving.allocator import TiltProposer
    from rayfolio.training.cards import TiltCard

    settings, panel, _ = tiny
    shutil.copytree(settings.registry, tmp_path / "registry")
    registry = ModelRegistry(tmp_path / "registry")
    ppo = registry.get("ppo-allocator", stage="production")
    params = TiltParams(k=1.0, band=0.01, cap=0.3)
    card = TiltCard(params=params, horizon=20, rebalance_every=5, cost_bps=10.0,
                    forecasters={"lstm-forecaster": "v0001"}, symbols=tuple(panel.symbols.tolist()),
                    calendar=ppo.card.calendar)  # fmt: skip
    register_tilt(registry, card, {"validation_sharpe": 9.0})  # better than the agent: "best" serves it
    proposer, versions = load_proposer(registry, "best", panel, settings.splits)
    assert isinstance(proposer, TiltProposer) and versions == {"tilt-allocator": "v0001"}
    ensemble = ForecastEnsemble(load_forecasters(registry, panel), panel)
    t = pipeline_date(panel, 30)
    current = np.r_[np.full(6, 0.1), 0.4]
    (proposal,) = proposer.propose_many([t], [current], [ensemble.forecast(t)])
    market = MarketData.from_panel(panel, PurgedDateSplitter(settings.splits, purge=60), ENV)
    z = ensemble.z_panel(np.array([t]))[..., panel.horizons.index(20)]
    np.testing.assert_array_equal(proposal, TiltAllocator(market, z, params, 5).decide(t, current))
    assert proposal.sum() == pytest.approx(1.0) and proposal[:-1].max() <= 0.3 + 1e-12
