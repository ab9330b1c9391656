"""Explanations by date: the batch job (Ray tasks) stores the production forecasters' explanations,
a replica serves them with the numbers it would have computed itself, a new model version reads
none of them, and a lookup never waits behind a computation. The tiny served market of
bench/tiny_market.py: an LSTM forecaster and a PPO allocator over six synthetic assets."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from bench.tiny_market import register_tiny_models, tiny_settings
from rayfolio.cluster.explanation_refresh import refresh_explanations
from rayfolio.data.store import FeatureStore
from rayfolio.explain.store import default_root
from rayfolio.serving import explainer as explainer_module
from rayfolio.serving.explainer import Explainer
from rayfolio.training.registry import ModelRegistry

CURRENT = np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.7])  # one asset held, the rest cash


@pytest.fixture(scope="module")
def tiny(ray_session, tmp_path_factory):
    return tiny_settings(tmp_path_factory.mktemp("precompute"))


def explainer(settings, **overrides) -> Explainer:
    return Explainer(settings.model_copy(update=overrides).model_dump(mode="json"))


def explain(e: Explainer, t: int, target: np.ndarray | None = None) -> dict:
    return asyncio.run(e.explain(t, CURRENT, 20, target))


def test_the_batch_job_stores_what_a_replica_would_compute_and_the_replica_serves_it(tiny):
    summary = refresh_explanations(tiny.store, tiny.registry, tiny.splits, days=2)
    assert (summary.asked, summary.explained) == (2, 2) and summary.tasks >= 1
    assert summary.root.startswith(str(default_root(tiny.store)))
    again = refresh_explanations(tiny.store, tiny.registry, tiny.splits, days=2)
    assert again.explained == 0 and again.detail().endswith("up to date")

    stored, fresh = explainer(tiny), explainer(tiny, explain_precomputed=False)
    t = len(stored.loaded.panel.dates) - 1
    date = str(stored.loaded.panel.dates[t])[:10]
    precomputed, computed = explain(stored, t), explain(fresh, t)
    assert f"precomputed for {date}" in precomputed["method"] and f", computed for {date}" in computed["method"]
    # The same numbers, to the last bit: a Ray task computed them, this process again.
    assert precomputed["assets"] == computed["assets"]
    assert any("policy_weight" in a for a in precomputed["assets"].values())


def test_only_the_assets_held_or_traded_get_the_policy_part_and_it_adds_up(tiny, tmp_path):
    e = explainer(tiny, explanations=tmp_path)
    t = len(e.loaded.panel.dates) - 2
    target = CURRENT.copy()
    target[[2, -1]] = [0.1, 0.6]  # the recommendation holds asset 0 and buys asset 2
    out = explain(e, t, target)
    symbols = list(out["assets"])
    with_policy = [s for s in symbols if "policy_weight" in out["assets"][s]]
    assert with_policy == [symbols[0], symbols[2]]
    assert "computed and stored for" in out["method"] and "of the 2 assets held or traded" in out["method"]
    proposal = e.loaded.agent.decide(t, CURRENT)
    for s in with_policy:
        asset = out["assets"][s]
        assert asset["policy_weight"] == pytest.approx(proposal[symbols.index(s)], abs=1e-6)
        total = asset["policy_base_value"] + sum(a["contribution"] for a in asset["policy_attributions"])
        spread = np.abs(proposal[:-1] - asset["policy_base_value"]).max()
        assert abs(total - asset["policy_weight"]) <= 0.1 * spread  # the stated tolerance (expected_gradients.py)
    # Without the recommendation's targets, the policy's own proposal says what is traded.
    traded = (CURRENT[:-1] > 0) | (np.abs(proposal[:-1] - CURRENT[:-1]) > 1e-6)
    out = explain(e, t)
    assert [s for s in symbols if "policy_weight" in out["assets"][s]] == [symbols[i] for i in np.flatnonzero(traded)]
    assert "precomputed for" in out["method"]


def test_a_lookup_never_waits_behind_a_computation(tiny, tmp_path, monkeypatch):
    e = explainer(tiny, explanations=tmp_path)
    last = len(e.loaded.panel.dates) - 1
    explain(e, last)  # stored
    started, release = threading.Event(), threading.Event()
    compute = explainer_module.explain_date

    def held(*args, **kwargs):
        started.set()
        release.wait(60)
        return compute(*args, **kwargs)

    monkeypatch.setattr(explainer_module, "explain_date", held)

    async def both():
        miss = asyncio.create_task(e.explain(last - 5, CURRENT, 20))
        assert await asyncio.to_thread(started.wait, 60)
        hit = await asyncio.wait_for(e.explain(last, CURRENT, 20), 30)  # while the miss is still computing
        assert not miss.done()
        release.set()
        return hit, await miss

    try:
        hit, miss = asyncio.run(both())
    finally:
        release.set()
    assert "precomputed for" in hit["method"] and "computed and stored for" in miss["method"]


def test_a_new_model_version_reads_none_of_the_old_explanations(tiny, tmp_path):
    e = explainer(tiny, explanations=tmp_path)
    t = len(e.loaded.panel.dates) - 1
    before = explain(e, t)
    assert "precomputed" in explain(e, t)["method"]
    registry = ModelRegistry(tiny.registry)
    register_tiny_models(registry, FeatureStore(tiny.store), seed=1)  # new versions, staging
    new = registry.versions("lstm-forecaster")[-1]
    registry.promote("lstm-forecaster", new)
    try:
        assert e.reload()["error"] is None and e.versions[0] == {"lstm-forecaster": new}
        after = explain(e, t)
        assert "computed and stored for" in after["method"]  # a miss: the store is keyed by the versions
        symbol = next(iter(before["assets"]))
        assert after["assets"][symbol]["expected_return"] != before["assets"][symbol]["expected_return"]
        assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
    finally:
        registry.rollback("lstm-forecaster")
