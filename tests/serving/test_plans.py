"""Goal planning over HTTP (serving/plans.py) in the app the ingress serves (create_app, in process):
the plan the core computes, the strategies of the run's backtest, bad input as a 422 naming the
field, an unreachable target as a 200 that says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.tiny_market import USER, auth, in_process_service, tiny_settings
from rayfolio.rl.planning import PlanSpec, load_histories, plan

COLUMNS = ("served_cautious", "served_balanced", "equal_weight")
GOAL = {"initial_wealth": 10_000, "goal": 40_000, "horizon_years": 10, "monthly_contribution": 100, "paths": 500}


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    """The tiny service, its run directory holding a backtest's returns.parquet (written before the app
    starts: a replica reads the strategies once), and a client."""
    settings = tiny_settings(tmp_path_factory.mktemp("plans"))
    rng = np.random.default_rng(4)
    dates = pd.bdate_range("2019-01-01", periods=400, name="date")
    returns = pd.DataFrame({c: rng.normal(0.0004 * (i + 1), 0.005 * (i + 1), len(dates)) for i, c in
                            enumerate(COLUMNS)}, index=dates)  # fmt: skip
    returns.to_parquet(settings.report_dir / "returns.parquet")
    with TestClient(in_process_service(settings)) as client:
        yield client, settings


def test_a_plan_is_the_cores_plan_with_every_field(served):
    client, settings = served
    # 3.0 is the integer 3 (JSON has one number type); strict types still refuse "3" and true.
    r = client.post("/v1/plans", json={**GOAL, "strategy": "balanced", "seed": 3.0}, headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    history = load_histories(settings.report_dir / "returns.parquet")["served_balanced"]
    expected = plan(history, PlanSpec.model_validate({**GOAL, "seed": 3})).model_dump(mode="json")
    assert out == expected
    assert set(out) >= {"probability", "probability_ci", "terminal_wealth", "fan", "target_probability", "caveat",
                        "required_monthly_contribution", "reachable", "years_needed", "provenance"}  # fmt: skip
    assert out["provenance"] == {"strategy": "served_balanced", "data_start": "2019-01-01", "data_end": "2020-07-13",
                                 "days": 400, "paths": 500, "block_length": 21.0, "seed": 3, "months": 120}  # fmt: skip
    assert [band["year"] for band in out["fan"]] == list(range(11)) and out["target_probability"] == 0.8
    assert out["probability_ci"][0] <= out["probability"] <= out["probability_ci"][1]
    assert "400 trading days" in out["caveat"]


def test_the_strategies_are_the_served_profiles_and_every_backtested_column(served):
    client, _ = served
    r = client.get("/v1/plans/strategies", headers=auth(USER))
    assert r.status_code == 200, r.text
    listed = {s["name"]: s for s in r.json()["strategies"]}
    assert set(listed) == {"cautious", "balanced", "served_cautious", "served_balanced", "equal_weight"}
    assert listed["balanced"]["column"] == "served_balanced" and listed["balanced"]["served"]
    assert not listed["equal_weight"]["served"] and r.json()["default"] == "balanced"
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PlanRequest"]["properties"]["strategy"]
    assert set(schema["enum"]) == set(listed)  # the document names exactly what is accepted


@pytest.mark.parametrize(
    ("change", "field"),
    [({"goal": 0}, "goal"), ({"goal": -5}, "goal"), ({"horizon_years": 0}, "horizon_years"),
     ({"horizon_years": 40.5}, "horizon_years"), ({"monthly_contribution": -1}, "monthly_contribution"),
     ({"target_probability": 0}, "target_probability"), ({"target_probability": 1}, "target_probability"),
     ({"strategy": "yolo"}, "strategy"), ({"paths": 10**7}, "paths"), ({"goal": "lots"}, "goal"),
     ({"leverage": 3}, "leverage"), ({"seed": 2.5}, "seed"), ({"paths": True}, "paths")],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_field(served, change, field):
    client, _ = served
    r = client.post("/v1/plans", json={**GOAL, **change}, headers=auth(USER))
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"{field}:"), message
    if field == "strategy":  # the choices are listed
        assert "'balanced'" in message and "'equal_weight'" in message


def test_an_unreachable_target_is_a_200_that_says_so_and_a_key_is_needed(served):
    client, _ = served
    body = {**GOAL, "goal": 5_000_000, "horizon_years": 3, "max_monthly_contribution": 1000}
    r = client.post("/v1/plans", json=body, headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["reachable"], out["required_monthly_contribution"], out["contribution_cap"]) == (False, None, 1000)
    assert client.post("/v1/plans", json=GOAL).status_code == 401


def test_without_a_backtest_plans_say_so(served, tmp_path):
    _, settings = served
    client = TestClient(in_process_service(settings.model_copy(update={"run_dir": tmp_path})))
    r = client.post("/v1/plans", json=GOAL, headers=auth(USER))
    assert r.status_code == 404 and "rayfolio run" in r.json()["error"]["message"]
    assert client.get("/v1/plans/strategies", headers=auth(USER)).json() == {"default": None, "strategies": []}
