"""The Serve application end to end through HTTP, with tiny untrained models
registered the way the main job registers them."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bench.tiny_market import (
    ADMIN,
    BURSTY,
    CLIENTS,
    KEYS,
    OTHER,
    USER,
    auth,
    register_tiny_models,
    serve_tiny,
    tiny_settings,
)
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import RECORDS, AuditLog
from rayfolio.serving.builder import build_app
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.settings import Autoscaling
from rayfolio.training.registry import ModelRegistry


@pytest.fixture(scope="module")
def service(ray_session, tmp_path_factory):
    from ray import serve

    settings = tiny_settings(tmp_path_factory.mktemp("serve"), max_body_bytes=4096, burst_per_key=60,
                             rate_per_key=1.0, house_limits=HouseLimits(max_position=0.3))  # fmt: skip
    client = serve_tiny(settings)
    yield client, settings, FeatureStore(settings.store)
    client.close()
    serve.shutdown()


def test_health_and_readiness(service):
    client, _, _ = service
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_versions"] == {"lstm-forecaster": "v0001",
                                                                           "ppo-allocator": "v0001"}  # fmt: skip
    openapi = client.get("/openapi.json")
    assert "/v1/recommendations" in openapi.json().get("paths", {}), openapi.text[:500]


def test_a_recommendation_respects_every_constraint_and_is_audited(service):
    client, settings, store = service
    symbols = sorted(store.to_pandas()["symbol"].unique().tolist())
    profile = {"risk_tolerance": 0.3, "max_position": 0.2, "exclude": [symbols[2]], "horizon_days": 20}
    body = {"portfolio": {symbols[0]: 0.3, symbols[1]: 0.2}, "risk_profile": profile}
    r = client.post("/v1/recommendations", json=body, headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    weights = out["target_weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and "CASH" in weights
    assert all(w <= 0.2 + 1e-9 for s, w in weights.items() if s != "CASH") and symbols[2] not in weights
    assert weights["CASH"] >= settings.house_limits.cash_floor - 1e-9
    assert out["model_versions"] == {"lstm-forecaster": "v0001", "ppo-allocator": "v0001"}
    assert len(out["checks"]) == 6 and set(out["expected_returns"]) == set(symbols)
    log = AuditLog(settings.audit_url, secret=b"audit-secret")
    record = log.get(out["request_id"])
    assert record is not None and record.payload["response"]["target_weights"] == pytest.approx(weights)
    assert log.verify().ok


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"portfolio": {"NOPE": 0.1}}, 422, "unknown_symbol", "unknown symbols in portfolio: NOPE"),
        ({"portfolio": {"SYN0000": 0.7, "SYN0001": 0.5}}, 422, "invalid_request", "sum to at most 1"),
        ({"portfolio": {"SYN0000": -0.1}}, 422, "invalid_request", "must be a finite number >= 0"),
        ({"risk_profile": {"risk_tolerance": 3}}, 422, "invalid_request", "risk_profile.risk_tolerance"),
        ({"as_of": "1990-01-01"}, 422, "invalid_as_of", "outside the servable dates"),
    ],
)
def test_bad_requests_get_the_error_model(service, body, status, code, fragment):
    client, _, _ = service
    r = client.post("/v1/recommendations", json=body, headers=auth(USER))
    assert r.status_code == status and r.json()["error"]["code"] == code and fragment in r.json()["error"]["message"]


def test_malformed_json_huge_bodies_and_keys(service):
    client, _, _ = service
    headers = {**auth(USER), "Content-Type": "application/json"}
    r = client.post("/v1/recommendations", content=b'{"portfolio": ', headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "malformed_json"
    r = client.post("/v1/recommendations", content=b"{" + b" " * 10_000 + b"}", headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    for headers in ({}, auth("wrong-key-0123456789"), {"Authorization": f"Basic {USER}"}):
        r = client.post("/v1/recommendations", json={}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/audit",):
        assert client.get(path, headers=auth(USER)).status_code == 403
    assert client.post("/v1/models/lstm-forecaster/rollback", headers=auth(USER)).status_code == 403
    for r in (client.get("/v1/nowhere", headers=auth(USER)), client.post("/v1/recommendations", content=b"[1,2]",
                                                                        headers=headers)):  # fmt: skip
        body = r.text
        assert "Traceback" not in body and "/work/" not in body and "site-packages" not in body


def test_admin_sees_the_audit_chain_and_tampering_shows(service):
    client, settings, _ = service
    client.post("/v1/recommendations", json={}, headers=auth(OTHER))
    audit = client.get("/v1/audit", headers=auth(ADMIN)).json()
    assert audit["chain"]["ok"] and audit["chain"]["records"] == len(audit["records"]) >= 1
    log = AuditLog(settings.audit_url, secret=b"audit-secret")
    with log.engine.begin() as c:
        c.execute(RECORDS.update().where(RECORDS.c.seq == 1).values(payload='{"edited": true}'))
    audit = client.get("/v1/audit", headers=auth(ADMIN)).json()
    assert not audit["chain"]["ok"] and audit["chain"]["first_bad_seq"] == 1


def test_forecasts_and_models(service):
    client, settings, _ = service
    r = client.get("/v1/forecasts", params={"symbols": "SYN0000,SYN0001", "horizon": 5}, headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out["ensemble"]) == {"SYN0000", "SYN0001"} and set(out["models"]) == {"lstm-forecaster"}
    assert np.isfinite(list(out["ensemble"].values())).all()
    assert client.get("/v1/forecasts", params={"horizon": 7}, headers=auth(USER)).status_code == 422
    models = client.get("/v1/models", headers=auth(USER)).json()
    assert {m["name"] for m in models["models"]} == {"lstm-forecaster", "ppo-allocator"}
    assert client.get("/v1/models/nope", headers=auth(USER)).status_code == 404
    r = client.post("/v1/models/lstm-forecaster/rollback", headers=auth(ADMIN))
    assert r.status_code == 422 and "no earlier production version" in r.json()["error"]["message"]
    assert str(settings.registry) not in r.text


def test_explanations_add_up_and_respect_ownership(service):
    client, _, _ = service
    body = {"portfolio": {"SYN0000": 0.2}, "risk_profile": {"horizon_days": 5}}
    r = client.post("/v1/explanations", json=body, headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    assert "not investment advice" in out["disclaimer"] and len(out["assets"]) == 6
    for symbol, asset in out["assets"].items():
        total = asset["base_value"] + sum(a["contribution"] for a in asset["attributions"])
        assert total == pytest.approx(asset["expected_return"], abs=2e-3)  # sampling error of expected gradients
        assert asset["rationale"].startswith(f"{symbol}: expected 5-day return")
        # The policy's part for the assets held (SYN0000) or traded only (serving/explainer.py).
        assert ("policy_weight" in asset or symbol != "SYN0000") and 0.0 <= asset.get("policy_weight", 0.0) <= 1.0
    recommended = client.post("/v1/recommendations", json=body, headers=auth(USER)).json()
    mine = client.post("/v1/explanations", json={"request_id": recommended["request_id"]}, headers=auth(USER))
    assert mine.status_code == 200 and mine.json()["as_of"] == recommended["as_of"]
    theirs = client.post("/v1/explanations", json={"request_id": recommended["request_id"]}, headers=auth(OTHER))
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
    admin = client.post("/v1/explanations", json={"request_id": recommended["request_id"]}, headers=auth(ADMIN))
    assert admin.status_code == 200
    assert client.post("/v1/explanations", json={}, headers=auth(USER)).status_code == 422


def test_each_key_is_rate_limited_on_its_own(service):
    client, _, _ = service
    codes = [client.get("/v1/models", headers=auth(BURSTY)) for _ in range(130)]
    assert all(r.status_code == 200 for r in codes[:55])  # the burst (60 per ingress replica)
    limited = [r for r in codes if r.status_code == 429]
    assert limited and limited[0].json()["error"]["code"] == "rate_limited"
    assert int(limited[0].headers["retry-after"]) >= 1
    assert client.get("/v1/models", headers=auth(USER)).status_code == 200  # other keys are not affected


def test_both_placements_recommend_the_same_and_limits_change_live(service):
    """The policy and risk filters in their own deployments give the same answer as in the
    ingress; new house limits in ``user_config`` apply without a restart."""
    from ray import serve

    client, settings, store = service
    symbols = sorted(store.to_pandas()["symbol"].unique().tolist())
    body = {"portfolio": {symbols[0]: 0.4, symbols[3]: 0.1}, "as_of": "2002-06-03",
            "risk_profile": {"risk_tolerance": 0.6, "horizon_days": 5}}  # fmt: skip
    environ = {"RAYFOLIO_API_KEYS": USER, "RAYFOLIO_AUDIT_KEY": "audit-secret"}
    # Small CPU shares: this second app shares the test session's 4 logical CPUs with the first, whose
    # ingress may have scaled out under the load tests above (in CI its replicas waited 10 minutes for
    # 0.25 CPU with 0.2 left). What is tested is the answers, not the scheduling.
    small = Autoscaling(num_cpus=0.05)
    scaling = {name: small for name in ("ingress", "ensemble", "explainer", "allocator_scaling", "risk_filter")}
    split = settings.model_copy(update={"placement": "deployments", **scaling})
    serve.run(build_app(split, environ), name="split", route_prefix="/split")
    try:
        here = client.post("/v1/recommendations", json=body, headers=auth(USER)).json()
        there = client.post("/split/v1/recommendations", json=body, headers=auth(USER))
        assert there.status_code == 200, there.text
        assert there.json()["target_weights"] == pytest.approx(here["target_weights"], abs=1e-9)
        assert there.json()["checks"] == here["checks"] and there.json()["model_versions"] == here["model_versions"]

        tighter = split.model_copy(update={"house_limits": HouseLimits(max_position=0.1)})
        serve.run(build_app(tighter, environ), name="split", route_prefix="/split")
        after = client.post("/split/v1/recommendations", json=body, headers=auth(USER)).json()
        assert max(w for s, w in after["target_weights"].items() if s != "CASH") <= 0.1 + 1e-9
        assert any(c["name"] == "max_position" and c["changed"] for c in after["checks"])
    finally:
        serve.delete("split")


def test_metrics_reach_prometheus_and_the_dashboard_asks_for_real_ones(service):
    """The service's custom metrics in the node's Prometheus export, and every metric the
    Grafana dashboard queries among what is exported (or Ray's own)."""
    import json
    import re
    import time
    from pathlib import Path

    import ray

    from rayfolio.serving.metrics import EXPORTED

    client, _, store = service
    symbol = sorted(store.to_pandas()["symbol"].unique().tolist())[0]
    for _ in range(3):
        assert (
            client.post("/v1/recommendations", json={"portfolio": {symbol: 0.5}}, headers=auth(USER)).status_code == 200
        )
    assert client.post("/v1/recommendations", json={"portfolio": {"NOPE": 0.5}}, headers=auth(USER)).status_code == 422
    port = ray._private.worker.global_worker.node.metrics_export_port
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "rayfolio-dashboard.json")
                           .read_text())  # fmt: skip
    queried = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"\bray_[a-z_]+", t["expr"])}
    assert {re.sub(r"_(bucket|count|sum)$", "", m) for m in queried if m.startswith("ray_rayfolio")} <= set(EXPORTED)
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:  # metrics leave the replicas every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        names = set(re.findall(r"^(ray_[a-z_]+)", text, flags=re.M))
        if {"ray_rayfolio_recommendations_total", "ray_rayfolio_model_version_info"} <= names and queried <= names:
            break
        time.sleep(3)
    names = set(re.findall(r"^(ray_[a-z_]+)", text, flags=re.M))
    assert queried <= names, sorted(queried - names)
    assert re.search(r'ray_rayfolio_model_version_info\{[^}]*model="ppo-allocator"[^}]*version="v0001"', text)
    assert re.search(r'ray_rayfolio_forecast_cache_total\{[^}]*result="hit"', text)


def test_a_retry_with_an_idempotency_key_is_answered_and_recorded_once(service):
    client, settings, _ = service
    body = {"portfolio": {"SYN0000": 0.25}, "risk_profile": {"horizon_days": 5}}
    headers = {**auth(USER), "Idempotency-Key": "order-7f3a"}
    first = client.post("/v1/recommendations", json=body, headers=headers)
    again = client.post("/v1/recommendations", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    log = AuditLog(settings.audit_url, secret=b"audit-secret")
    records = [r for r in log.records(limit=1000) if r.request_id == first.json()["request_id"]]
    assert len(records) == 1  # (the chain itself was edited by the tampering test above)
    # Another key's same Idempotency-Key is another request; another body under this key is a conflict.
    theirs = client.post("/v1/recommendations", json=body, headers={**auth(OTHER), "Idempotency-Key": "order-7f3a"})
    assert theirs.status_code == 200 and theirs.json()["request_id"] != first.json()["request_id"]
    changed = client.post("/v1/recommendations", json={**body, "portfolio": {}}, headers=headers)
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"
    bad = client.post("/v1/recommendations", json=body, headers={**auth(USER), "Idempotency-Key": "x" * 129})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_one_keys_records_are_never_visible_with_another_key(service):
    """Object-level access: a recommendation, its explanation and its audit record belong to
    the key that asked; another non-admin key gets 404 or 403, never the object."""
    import json

    client, _, _ = service
    body = {"portfolio": {"SYN0002": 0.1}, "risk_profile": {"horizon_days": 20}}
    mine = client.post("/v1/recommendations", json=body, headers={**auth(USER), "Idempotency-Key": "shared-7"})
    theirs = client.post("/v1/recommendations", json=body, headers={**auth(OTHER), "Idempotency-Key": "shared-7"})
    assert mine.status_code == theirs.status_code == 200
    assert theirs.json()["request_id"] != mine.json()["request_id"]  # the same Idempotency-Key is not my answer
    for key, other_id in ((OTHER, mine.json()["request_id"]), (USER, theirs.json()["request_id"])):
        r = client.post("/v1/explanations", json={"request_id": other_id}, headers=auth(key))
        assert r.status_code == 404 and other_id not in json.dumps(r.json().get("assets", {}))
        assert client.get("/v1/audit", headers=auth(key)).status_code == 403
    records = client.get("/v1/audit", params={"limit": 1000}, headers=auth(ADMIN)).json()["records"]
    owners = {r["request_id"]: r["key_id"] for r in records}
    assert owners[mine.json()["request_id"]] != owners[theirs.json()["request_id"]]
    assert USER not in json.dumps(records) and OTHER not in json.dumps(records)  # keys are never stored


@pytest.mark.parametrize("clients", [16, 64])
def test_concurrent_clients_with_their_own_keys_all_get_answers(service, clients):
    """Normal load: every client (its own key, under its rate limit) gets 200, never 503 or 429."""
    import collections

    from bench.load import steady_load
    from bench.tiny_market import CLIENTS

    client, _, store = service
    symbols = sorted(store.to_pandas()["symbol"].unique().tolist())
    outcomes = steady_load(str(client.base_url), list(CLIENTS[:clients]), symbols, seconds=4, workers=clients,
                           rate=clients * 0.75, retry=False)  # fmt: skip
    statuses = collections.Counter(o.status for o in outcomes)
    assert len(outcomes) >= clients and statuses == {200: len(outcomes)}, statuses


def test_a_method_a_route_does_not_take_names_the_ones_it_does(service):
    client, _, _ = service
    r = client.request("OPTIONS", "/v1/models/reload", headers=auth(ADMIN))
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "method_not_allowed"
    r = client.request("DELETE", "/v1/recommendations", headers=auth(USER))
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_requests_are_strict_numbers_are_numbers(service):
    client, _, _ = service
    for profile in ({"risk_tolerance": False}, {"risk_tolerance": "0.5"}, {"horizon_days": "20"}):
        r = client.post("/v1/recommendations", json={"risk_profile": profile}, headers=auth(USER))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", (profile, r.text)
    document = client.get("/openapi.json").json()
    horizon = document["components"]["schemas"]["RiskProfileIn"]["properties"]["horizon_days"]
    assert horizon["enum"] == [5, 20, 60]
    weights = document["components"]["schemas"]["RecommendationRequest"]["properties"]["portfolio"]
    assert weights["additionalProperties"]["minimum"] == 0 and weights["propertyNames"]["enum"]


def test_the_backtests_served_path_is_what_the_running_service_answers(service, tmp_path):
    """N rebalance dates replayed by the backtest (its drifted weights, a risk profile) and the same
    requests sent to the running Serve app over HTTP: identical target weights, bit for bit."""
    from rayfolio.rl.backtest import rebalance_dates, simulate
    from rayfolio.serving.deployments import load_panel, validation_dates
    from rayfolio.serving.replay import ServedStrategy, replay_pipeline, replay_request, weights_of
    from rayfolio.serving.schemas import RiskProfileIn
    from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
    from rayfolio.training.registry import ModelRegistry

    client, settings, _ = service
    panel, registry = load_panel(settings), ModelRegistry(settings.registry)
    ensemble = ForecastEnsemble(load_forecasters(registry, panel), panel, validation_dates(settings, panel))
    pipeline = replay_pipeline(registry, panel, ensemble, settings.allocator, settings.house_limits,
                               tmp_path / "replay.db", splits=settings.splits)  # fmt: skip
    profile = RiskProfileIn(risk_tolerance=0.2)
    asked = []

    class Recording(ServedStrategy):
        def decide(self, t, weights):
            asked.append((t, weights.copy()))
            return super().decide(t, weights)

    first = pipeline.market.first_servable + 1
    decisions = rebalance_dates(first, first + 8 * 5, 5)  # N = 8 dates
    run = simulate(Recording("served_cautious", pipeline, profile), pipeline.market.returns, panel.dates,
                   panel.symbols, decisions, first + 8 * 5, 10.0)  # fmt: skip
    assert len(asked) == 8
    for (t, current), target in zip(asked, run.weights.to_numpy(), strict=True):
        body = replay_request(pipeline.market, t, current, profile).model_dump(mode="json")
        r = client.post("/v1/recommendations", json=body, headers=auth(CLIENTS[-1]))
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(weights_of(pipeline.market.symbols, r.json()["target_weights"]), target)


def test_an_experiment_changes_live_with_the_ingress_user_config(service):
    """`serve deploy` with a new user_config: the replicas reconfigure in place (no restart) and
    serve the experiment once both arms have loaded; an invalid one is refused, the last keeps serving."""
    import time

    from ray import serve

    client, settings, store = service
    register_tiny_models(ModelRegistry(settings.registry), store, seed=1)  # v0002 of each, staging
    environ = {"RAYFOLIO_API_KEYS": KEYS, "RAYFOLIO_AUDIT_KEY": "audit-secret"}
    headers = {**auth(CLIENTS[40]), "X-Client-Id": "app-user-7"}

    def deploy(experiment: dict | None) -> None:
        app = build_app(settings.model_copy(update={"experiment": experiment}), environ)
        serve.run(app, name="rayfolio", route_prefix="/")

    def tag_becomes(expected, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            r = client.post("/v1/recommendations", json={}, headers=headers)
            assert r.status_code == 200, r.text
            out = r.json()
            if (out["experiment"] or {}).get("arm") == expected or (expected is None and out["experiment"] is None):
                return out
            assert time.monotonic() < deadline, out["experiment"]
            time.sleep(0.5)

    canary = {"name": "live", "model": "ppo-allocator", "control": "v0001", "candidate": "v0002",
              "candidate_percent": 100.0}  # fmt: skip
    deploy(canary)
    out = tag_becomes("candidate")
    assert out["model_versions"]["ppo-allocator"] == "v0002"
    deploy({**canary, "candidate": "v0001"})  # candidate equals control: refused, with the reason
    deadline = time.monotonic() + 30
    while "nothing to compare" not in str(client.get("/v1/experiments", headers=auth(ADMIN)).json()["refused"]):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    for _ in range(5):  # and no request fails for it
        assert client.post("/v1/recommendations", json={}, headers=headers).status_code == 200
    deploy({**canary, "candidate_percent": 0.0})
    tag_becomes("control")
