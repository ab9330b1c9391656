"""A running service picks up dates appended to its feature store without a restart (issue 16,
part 2): the new dates answered as a fresh service on the appended store answers them, no
failed request while the store switches under load, and a store version with a symbol the
models were not trained on keeps the old data serving."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.tiny_market import (
    ADMIN,
    CLIENTS,
    SPLITS,
    USER,
    auth,
    in_process_service,
    register_tiny_models,
    serve_in_thread,
    serve_tiny,
)
from rayfolio.data.append import append_to_store
from rayfolio.data.sources import SyntheticSource, within
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.serving.audit import sqlite_url
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.registry import ModelRegistry

SOURCE = SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=8))  # bench.tiny_market's market
DATES = pd.bdate_range(SOURCE.config.start, periods=SOURCE.config.n_days).date
HELD_BACK = 15  # the last days, appended while the service runs
CUT = DATES[-HELD_BACK - 1]  # the store is built up to this day
NEW = DATES[-1]  # the last appended day


@pytest.fixture(scope="module")
def built(ray_session, tmp_path_factory) -> Path:
    """A store up to CUT and a registry of tiny models trained on it (never modified: copy it)."""
    root = tmp_path_factory.mktemp("refresh")
    prepare_feature_store(within(SOURCE, end=CUT), root / "store", (5, 20, 60))
    register_tiny_models(ModelRegistry(root / "registry"), FeatureStore(root / "store"))
    return root


def settings_for(built: Path, root: Path, name: str, **overrides) -> ServeSettings:
    """A copy of the built store (and the shared registry) served with a short poll period."""
    shutil.copytree(built / "store", root / name)
    overrides = {"data_poll_s": 0.2} | overrides
    return ServeSettings(store=root / name, registry=built / "registry", splits=SPLITS,
                         audit_url=sqlite_url(root / f"{name}-audit.db"), **overrides)  # fmt: skip


def wait_for_version(client, version: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = client.get("/readyz").json()
        if ready["data"]["version"] == version:
            return ready
        time.sleep(0.1)
    raise AssertionError(f"the service did not pick up store version {version}: {ready}")


def test_appended_dates_are_served_without_a_restart_as_a_fresh_service_serves_them(built, tmp_path):
    settings = settings_for(built, tmp_path, "store")
    client = TestClient(in_process_service(settings))
    assert client.get("/readyz").json()["data"] == {"version": 1, "last_date": str(CUT)}
    query = {"as_of": str(NEW), "horizon": 20}
    body = {"portfolio": {"SYN0000": 0.3}, "risk_profile": {"horizon_days": 20}, "as_of": str(NEW)}
    before = client.get("/v1/forecasts", params=query, headers=auth(USER))
    assert before.status_code == 422 and before.json()["error"]["code"] == "invalid_as_of"

    summary = append_to_store(settings.store, within(SOURCE, start=CUT + dt.timedelta(days=1)))
    assert summary.version == 2 and FeatureStore(settings.store).version == 2
    ready = wait_for_version(client, 2)
    assert ready["data"]["last_date"] == str(NEW) and ready["data"]["switch_s"] > 0
    # The Ensemble (its own watch, not yet polled) gets a date it lacks: it loads it before answering.
    served = client.get("/v1/forecasts", params=query, headers=auth(USER))
    recommended = client.post("/v1/recommendations", json=body, headers=auth(USER))
    assert served.status_code == 200 and recommended.status_code == 200, (served.text, recommended.text)
    assert served.json()["as_of"] == recommended.json()["as_of"] == str(NEW)

    fresh = TestClient(in_process_service(settings.model_copy(update={"audit_url": sqlite_url(tmp_path / "f.db")})))
    assert fresh.get("/readyz").json()["data"] == {"version": 2, "last_date": str(NEW)}
    assert served.json() == fresh.get("/v1/forecasts", params=query, headers=auth(USER)).json()
    expected = fresh.post("/v1/recommendations", json=body, headers=auth(USER)).json()
    got = recommended.json()
    for field in ("target_weights", "trades", "expected_returns", "confidence", "portfolio_risk", "checks",
                  "model_versions"):  # fmt: skip
        assert got[field] == expected[field], field
    # An old date answers as before the switch (its features never change).
    old = {**query, "as_of": str(CUT)}
    assert (
        client.get("/v1/forecasts", params=old, headers=auth(USER)).json()
        == fresh.get("/v1/forecasts", params=old, headers=auth(USER)).json()
    )


def test_reload_picks_up_a_new_store_version_at_once(built, tmp_path):
    settings = settings_for(built, tmp_path, "store", placement="deployments", data_poll_s=3600)
    client = TestClient(in_process_service(settings))
    assert client.get("/readyz").json()["data"]["version"] == 1
    append_to_store(settings.store, within(SOURCE, start=CUT + dt.timedelta(days=1)))
    assert client.get("/readyz").json()["data"]["version"] == 1  # next poll in an hour
    r = client.post("/v1/models/reload", headers=auth(ADMIN))
    assert r.status_code == 200 and r.json()["data"]["version"] == 2 and r.json()["data"]["last_date"] == str(NEW)
    body = {"portfolio": {}, "risk_profile": {"horizon_days": 5}}
    out = client.post("/v1/recommendations", json=body, headers=auth(USER))
    assert out.status_code == 200 and out.json()["as_of"] == str(NEW), out.text


def test_no_failed_request_while_the_store_switches_under_load(built, tmp_path):
    """Four clients loop recommendations and forecasts (real HTTP, every deployment's class in
    this process, placement "deployments": all five serving objects switch) through an append."""
    settings = settings_for(built, tmp_path, "store", placement="deployments")
    url, stop = serve_in_thread(in_process_service(settings))
    load_through_an_append(url, settings, stop)


@pytest.mark.slow
def test_no_failed_request_while_the_store_switches_under_load_on_serve(built, tmp_path):
    """The same through Ray Serve: each deployment's replica notices the new version by itself."""
    from ray import serve

    settings = settings_for(built, tmp_path, "store", placement="deployments", data_poll_s=0.5)
    client = serve_tiny(settings)
    try:
        load_through_an_append(str(client.base_url), settings, client.close)
    finally:
        serve.shutdown()


def load_through_an_append(url: str, settings: ServeSettings, stop) -> None:
    """Four client threads loop requests at ``url`` while the store gets its held-back days, until
    20 have been answered for the new last date; every request must succeed."""
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    as_of: Counter[str] = Counter()
    done = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=auth(CLIENTS[i])) as http:
            while not done.is_set():
                if i % 2:
                    r = http.get("/v1/forecasts", params={"horizon": 5})
                else:
                    r = http.post("/v1/recommendations", json={"portfolio": {"SYN0001": 0.5},
                                                               "risk_profile": {"horizon_days": 5}})  # fmt: skip
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    failures.append(r.text[:200])
                else:
                    as_of[r.json()["as_of"]] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        append_to_store(settings.store, within(SOURCE, start=CUT + dt.timedelta(days=1)))
        appended = time.monotonic()
        with httpx.Client(base_url=url, timeout=60) as http:
            ready = wait_for_version(http, 2)
        seen_after = time.monotonic() - appended
        deadline = time.monotonic() + 30
        while as_of[str(NEW)] < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=60)
        stop()
    total = sum(statuses.values())
    print(f"\nrequests {total}, failed {total - statuses[200]}, as_of {dict(as_of)}, ingress serving version 2 "
          f"{seen_after:.2f} s after the append (its switch {ready['data']['switch_s']:.2f} s)")  # fmt: skip
    assert failures == [] and statuses[200] == total
    assert as_of[str(CUT)] > 0 and as_of[str(NEW)] >= 20


def test_a_store_version_with_a_new_symbol_keeps_the_old_data_serving(built, tmp_path, caplog):
    settings = settings_for(built, tmp_path, "store")
    client = TestClient(in_process_service(settings))
    seven = SyntheticSource(SyntheticPanelConfig(n_assets=7, n_days=700, seed=8))
    summary = append_to_store(settings.store, within(seven, start=CUT + dt.timedelta(days=1)))
    assert summary.version == 2 and "SYN0006" in FeatureStore(settings.store).to_pandas(end=str(NEW))["symbol"].values
    with caplog.at_level(logging.WARNING, logger="rayfolio.serving.data_watch"):
        deadline = time.monotonic() + 3  # fifteen poll periods
        while time.monotonic() < deadline:
            assert client.get("/readyz").json()["data"] == {"version": 1, "last_date": str(CUT)}
            time.sleep(0.05)
        r = client.get("/v1/forecasts", params={"horizon": 5}, headers=auth(USER))
    assert r.status_code == 200 and r.json()["as_of"] == str(CUT) and "SYN0006" not in r.json()["ensemble"]
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "rayfolio.serving.data_watch"]
    # One line per serving object that looked (not one per poll), each saying why.
    owners = [line.split(":")[0] for line in lines]
    assert "ingress" in owners and len(owners) == len(set(owners)), lines
    assert all("keeps serving feature store version 1 (to " in line and "not version 2: new symbols SYN0006" in line
               and "need a retrain" in line for line in lines)  # fmt: skip
    assert np.isfinite(list(r.json()["ensemble"].values())).all()
