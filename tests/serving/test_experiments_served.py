"""Experiments and approvals in the served path: the in-process app (the ingress's own
``create_app`` and service, its deployments' classes in this process) over tiny registered
models with two versions each."""

from __future__ import annotations

import asyncio
import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.tiny_market import ADMIN, USER, auth, in_process_service, register_tiny_models, tiny_settings
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.experiments import ExperimentConfig, arm_of, conclusion_id
from rayfolio.serving.risk import HouseLimits
from rayfolio.training.registry import WEIGHTS, ModelRegistry


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory):
    """Settings over a store and a registry with v0001 (production) and v0002 (staging) of the
    tiny LSTM forecaster and PPO allocator; approval above 0.9 turnover."""
    root = tmp_path_factory.mktemp("experiments")
    settings = tiny_settings(root, house_limits=HouseLimits(approval_turnover=0.9), data_poll_s=0.2)
    register_tiny_models(ModelRegistry(settings.registry), FeatureStore(settings.store), seed=1)
    return settings


@pytest.fixture(scope="module")
def served(built):
    app = in_process_service(built, keys=f"{USER},{ADMIN}:admin")
    with TestClient(app) as client:
        yield client, app.state.service


def experiment(**overrides) -> ExperimentConfig:
    fields = {"name": "canary", "model": "ppo-allocator", "control": "v0001", "candidate": "v0002",
              "candidate_percent": 50.0} | overrides  # fmt: skip
    return ExperimentConfig(**fields)


def recommend(client, client_id: str, portfolio: dict | None = None, key: str = USER):
    headers = {**auth(key), "X-Client-Id": client_id}
    r = client.post("/v1/recommendations", json={"portfolio": portfolio or {}}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("model", ["ppo-allocator", "lstm-forecaster"])
def test_each_client_gets_its_arm_and_the_record_keeps_both(served, built, model):
    client, service = served
    config = experiment(model=model, name=f"canary-{model}")
    asyncio.run(service.set_experiment(config))
    assert service.experiment_refused is None and service.experiment.config == config
    audit = AuditLog(built.audit_url)
    arms = {}
    for i in range(24):
        out = recommend(client, f"app-user-{i}")
        arm = arm_of(config.salt, f"app-user-{i}", 50.0)
        assert out["experiment"] == {"name": config.name, "arm": arm, "fallback": False}
        assert out["model_versions"][model] == (config.candidate if arm == "candidate" else config.control)
        record = audit.get(out["request_id"]).payload["experiment"]
        assert record["arm"] == record["served_arm"] == arm and record["model"] == model
        assert record["arms"][arm]["target_weights"] == pytest.approx(out["target_weights"])
        assert {a["error"] for a in record["arms"].values()} == {None}
        arms[arm] = record["arms"]
    assert set(arms) == {"control", "candidate"}  # 24 clients at 50%: both arms were served
    # The two versions decide differently (different weights): the shadow arm's answer is its own.
    control, candidate = arms["control"]["control"]["target_weights"], arms["control"]["candidate"]["target_weights"]
    names = sorted(set(control) | set(candidate))
    differ = not np.allclose([control.get(n, 0.0) for n in names], [candidate.get(n, 0.0) for n in names])
    assert differ or model == "lstm-forecaster"  # (an untrained forecaster may move no weight)
    # The same client on a fresh service (another replica, or after a restart) keeps its arm.
    with TestClient(other := in_process_service(built, keys=f"{USER},{ADMIN}:admin")) as second:
        asyncio.run(other.state.service.set_experiment(config))
        for i in range(6):
            assert recommend(second, f"app-user-{i}")["experiment"]["arm"] == arm_of(config.salt, f"app-user-{i}", 50)
    asyncio.run(service.set_experiment(None))
    assert recommend(client, "app-user-0")["experiment"] is None


def test_a_candidate_that_fails_its_checksum_is_refused_and_control_keeps_serving(built, tmp_path):
    registry = tmp_path / "registry"
    shutil.copytree(built.registry, registry)
    (registry / "ppo-allocator" / "v0002" / WEIGHTS).write_bytes(b"tampered")
    settings = built.model_copy(update={"registry": registry})
    app = in_process_service(settings, keys=f"{USER},{ADMIN}:admin")
    service, failures, stop = app.state.service, [], threading.Event()
    with TestClient(app) as client:
        recommend(client, "warm-up")

        def load() -> None:
            while not stop.is_set():
                r = client.post("/v1/recommendations", json={}, headers={**auth(USER), "X-Client-Id": "c"})
                if r.status_code != 200 or r.json()["experiment"] is not None:
                    failures.append(r.text)

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        asyncio.run(service.set_experiment(experiment()))
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert "weights.pt" in service.experiment_refused and service.experiment is None
        info = client.get("/v1/experiments", headers=auth(ADMIN)).json()
        assert info["serving"] is None and info["configured"]["candidate"] == "v0002"
        refused = info["refused"]
        assert "sha256 does not match" in refused and "<registry>" in refused and str(registry) not in refused


def test_a_concluded_experiment_serves_its_winner_to_everyone(built, tmp_path):
    settings = built.model_copy(update={"audit_url": f"sqlite:///{tmp_path / 'audit.db'}"})
    app = in_process_service(settings, keys=f"{USER},{ADMIN}:admin")
    service = app.state.service
    with TestClient(app) as client:
        config = experiment(candidate_percent=0.0)
        asyncio.run(service.set_experiment(config))
        assert recommend(client, "x")["experiment"]["arm"] == "control"  # 0%: nobody on the candidate
        AuditLog(settings.audit_url).append(
            key="admin", request_id=conclusion_id(config.name), kind="experiment",
            payload={"name": config.name, "action": "promote"},
        )  # fmt: skip
        import time

        time.sleep(0.3)  # > data_poll_s: the replica looks for a conclusion
        out = recommend(client, "x")
        assert out["experiment"] is None and out["model_versions"]["ppo-allocator"] == "v0002"


def test_large_recommendations_wait_for_an_admin(served, built):
    client, service = served
    asyncio.run(service.set_experiment(None))
    symbol = str(service.local[0].symbols[0])
    big = recommend(client, "a", {symbol: 1.0})  # selling most of one position: turnover over 0.9
    assert big["status"] == "pending_approval" and not big["executable"] and big["approval_reasons"]
    assert "turnover" in big["approval_reasons"][0] and big["valid_until"] is not None
    rid = big["request_id"]
    assert client.get(f"/v1/recommendations/{rid}", headers=auth(USER)).json()["status"] == "pending_approval"
    reason = {"reason": "checked with the client by phone"}
    r = client.post(f"/v1/recommendations/{rid}/approve", json=reason, headers=auth(USER))
    assert r.status_code == 403
    r = client.post(f"/v1/recommendations/{rid}/approve", json=reason, headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["executable"], r.text
    again = client.post(f"/v1/recommendations/{rid}/reject", json=reason, headers=auth(ADMIN))
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
    status = client.get(f"/v1/recommendations/{rid}", headers=auth(USER)).json()
    assert status["status"] == "approved" and status["decision"]["reason"] == reason["reason"]
    small = recommend(client, "b", {k: v for k, v in big["target_weights"].items() if k != "CASH"})
    assert small["status"] == "ok" and small["executable"]
    r = client.post(f"/v1/recommendations/{small['request_id']}/approve", json=reason, headers=auth(ADMIN))
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_pending"
    r = client.post("/v1/recommendations/nope/approve", json=reason, headers=auth(ADMIN))
    assert r.status_code == 404
    r = client.post(f"/v1/recommendations/{rid}/approve", json={"reason": ""}, headers=auth(ADMIN))
    assert r.status_code == 422
    log = AuditLog(built.audit_url)
    assert log.verify().ok and log.get(f"decision:{rid}").kind == "approval"
    # The compliance report over HTTP (admin) counts the decision and names the chain's last hash.
    assert client.get("/v1/audit/report", headers=auth(USER)).status_code == 403
    report = client.get("/v1/audit/report", headers=auth(ADMIN)).json()
    last = log.records(limit=1, offset=log.count() - 1)[0]
    assert report["database"]["chain"]["ok"] and report["database"]["last_hash"] == last.hash
    markdown = client.get("/v1/audit/report", params={"format": "md"}, headers=auth(ADMIN))
    assert markdown.headers["content-type"].startswith("text/markdown") and "approved" in markdown.text
    r = client.get("/v1/audit/report", params={"from": "2026-02-01", "to": "2026-01-01"}, headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["database"]["records_in_window"] == 0  # an empty window
    for bad in ("0", "2026-02-30", "20260101"):
        r = client.get("/v1/audit/report", params={"to": bad}, headers=auth(ADMIN))
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("to: "), bad


def test_experiment_routes_mirror_the_cli(built, tmp_path):
    settings = built.model_copy(update={"audit_url": f"sqlite:///{tmp_path / 'audit.db'}"})
    app = in_process_service(settings, keys=f"{USER},{ADMIN}:admin")
    with TestClient(app) as client:
        asyncio.run(app.state.service.set_experiment(experiment(name="routes", candidate_percent=30.0)))
        dates = [str(d)[:10] for d in app.state.service.local[0].dates[-30:-1]]
        for d in dates:
            for user in ("u1", "u2", "u3"):
                r = client.post("/v1/recommendations", json={"as_of": d}, headers={**auth(USER), "X-Client-Id": user})
                assert r.status_code == 200, r.text
        assert client.get("/v1/experiments/routes", headers=auth(USER)).status_code == 403
        assert client.get("/v1/experiments/nope", headers=auth(ADMIN)).status_code == 404
        status = client.get("/v1/experiments/routes", headers=auth(ADMIN)).json()
        assert status["name"] == "routes" and status["decision"] in ("continue", "promote", "stop")
        arms = status["arms"]
        assert arms["control"]["requests"] + arms["candidate"]["requests"] == 3 * len(dates) == status["records"]
        assert status["comparison"]["dates"] == len(dates)  # every as_of has its next day: all scored
        if status["decision"] != "promote":
            r = client.post("/v1/experiments/routes/promote", headers=auth(ADMIN))
            assert r.status_code == 409 and r.json()["error"]["code"] == "experiment_not_ready"
        r = client.post("/v1/experiments/routes/stop", headers=auth(ADMIN))
        assert r.status_code == 200 and r.json()["concluded"] == "stop", r.text
        assert client.post("/v1/experiments/routes/stop", headers=auth(ADMIN)).json()["error"]["code"] == (
            "already_concluded")  # fmt: skip
        out = recommend(client, "u1")
        assert out["experiment"] is None and out["model_versions"]["ppo-allocator"] == "v0001"  # stopped: control
        assert client.get("/v1/experiments/routes", headers=auth(ADMIN)).json()["decision"] == "stopped"
