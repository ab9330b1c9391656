"""The console's pages in a real browser against the served tiny app (conftest.py): sign in with a
key, filter and open a model and compare two versions, a recommendation with its weights chart and
explanation, a goal plan with its fan chart, a training job followed to its metrics, and the narrow
(390 px) layout with a user key. The page fixture fails a test on any console error or request
off 127.0.0.1; each test saves screenshots."""

from __future__ import annotations

import re

import pytest
import yaml

from bench.tiny_market import RUN_CONFIG, auth, register_tiny_models
from rayfolio.data.store import FeatureStore
from rayfolio.training.registry import ModelRegistry

TINY_RUN = RUN_CONFIG


def sign_in(page, key: str) -> None:
    page.goto(page.path("/ui/"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Models", exact=True).wait_for(timeout=30_000)


def chart_data(page, figure_id: str) -> dict:
    """The labels and datasets Chart.js draws in the figure ``figure_id``."""
    return page.evaluate(
        "id => { const c = document.getElementById(id).chart; "
        "return {labels: c.data.labels, datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))}; }",
        figure_id,
    )


def test_sign_in_filter_open_a_model_and_compare_two_versions(console, page):
    # A second version of the forecaster (staging), so there are two to compare.
    register_tiny_models(ModelRegistry(console.settings.registry), FeatureStore(console.settings.store), seed=1)
    sign_in(page, console.admin_key)
    assert page.evaluate("sessionStorage.getItem('rayfolio.api_key')") == console.admin_key
    assert console.admin_key not in page.url  # never in a URL
    page.get_by_label("Category").select_option("forecaster")
    page.get_by_label("Use case").select_option(label="a strong sequence baseline")
    page.get_by_text("1 of 2 models").wait_for()
    rows = page.locator("tbody tr")
    assert rows.count() == 1 and "lstm-forecaster" in rows.first.inner_text()
    page.shot("models-filtered")

    page.get_by_role("link", name="lstm-forecaster").click()
    page.get_by_role("heading", name="lstm-forecaster").wait_for()
    versions = page.locator("section", has=page.get_by_role("heading", name="Versions"))
    assert "v0001" in versions.inner_text() and "v0002" in versions.inner_text()
    assert page.get_by_text("a strong sequence baseline").count() >= 1  # the family's spec
    # Promote asks first; cancelling changes nothing.
    versions.get_by_role("button", name="Promote to production").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert ModelRegistry(console.settings.registry).stage_version("lstm-forecaster", "production") == "v0001"
    page.shot("model-detail")

    page.get_by_role("link", name="Compare these versions").click()
    page.locator("#rankic-chart canvas").wait_for(timeout=30_000)
    metrics = page.locator("section", has=page.get_by_role("heading", name="Metrics")).inner_text()
    assert "lstm-forecaster v0001" in metrics and "lstm-forecaster v0002" in metrics
    drawn = chart_data(page, "rankic-chart")
    assert drawn["labels"] and drawn["datasets"][0]["label"] == "lstm"
    page.shot("compare")


def test_a_recommendation_shows_its_weights_chart_and_explanation(console, page):
    sign_in(page, console.user_key)
    page.get_by_role("link", name="Recommend").click()
    page.get_by_role("button", name="Get a recommendation").click()
    page.locator("#weights-chart canvas").wait_for(timeout=60_000)
    drawn = chart_data(page, "weights-chart")
    current, target = drawn["datasets"]
    assert (current["label"], target["label"]) == ("current", "target") and drawn["labels"][-1] == "CASH"
    assert sum(target["data"]) == pytest.approx(1.0, abs=1e-4)  # every held symbol and cash
    assert sum(current["data"]) == pytest.approx(1.0, abs=1e-9)  # the form's 3 x 0.2 and the rest cash
    assert re.search(r"\bOK\b|Pending approval", page.locator("#recommendation").inner_text())
    page.shot("recommendation")

    page.get_by_role("button", name="Explain this recommendation").click()
    page.locator("#attribution-chart canvas").wait_for(timeout=60_000)
    asset = page.locator("#explain-asset").input_value()
    assert page.locator("#explanation .rationale").first.inner_text().startswith(f"{asset}:")
    assert len(chart_data(page, "attribution-chart")["labels"]) > 0
    page.shot("explanation")


def test_a_goal_plan_shows_the_api_figures_and_its_fan_chart(console, page):
    sign_in(page, console.user_key)
    page.get_by_role("link", name="Plan").click()
    page.get_by_label("Goal ($)").fill("120000")
    page.get_by_label("Horizon (years)").fill("10")
    page.get_by_role("button", name="Run the plan").click()
    page.locator("#fan-chart canvas").wait_for(timeout=60_000)
    strategy = page.get_by_label("Strategy").input_value()
    body = {"initial_wealth": 50000, "goal": 120000, "horizon_years": 10, "monthly_contribution": 500,
            "strategy": strategy, "target_probability": 0.8, "paths": 10000, "seed": 0}  # as the form  # fmt: skip
    plan = console.client.post("/v1/plans", json=body, headers=auth(console.user_key)).json()
    assert page.locator("#plan-probability").inner_text() == f"{plan['probability'] * 100:.1f}%"
    drawn = chart_data(page, "fan-chart")
    assert [d["label"] for d in drawn["datasets"]] == ["5th percentile", "95th percentile", "25th percentile",
                                                       "75th percentile", "median", "goal"]  # fmt: skip
    assert drawn["datasets"][4]["data"] == [p["p50"] for p in plan["fan"]]
    assert page.get_by_text(plan["caveat"]).is_visible()
    page.shot("plan")


def test_a_training_job_runs_to_its_metrics(console, page):
    sign_in(page, console.admin_key)
    page.get_by_role("link", name="Training").click()
    page.get_by_label("Command").select_option("backtest")
    page.get_by_label("Config Yaml").fill(yaml.safe_dump(TINY_RUN))
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url(re.compile(r"#/training/rayfolio-"), timeout=30_000)
    page.locator("#job-status.succeeded, #job-status.failed, #job-status.stopped").wait_for(timeout=240_000)
    assert page.locator("#job-status").inner_text().startswith("SUCCEEDED"), page.locator("#job-log").inner_text()
    assert "equal_weight" in page.locator("#job-metrics").inner_text()
    page.shot("training-job")


def test_the_narrow_layout_with_a_user_key(console, page):
    page.set_viewport_size({"width": 390, "height": 800})
    sign_in(page, console.user_key)
    assert page.get_by_role("link", name="Recommend").is_visible()
    assert not page.get_by_role("link", name="Training").is_visible()  # admin pages hidden for a user key
    assert not page.get_by_role("link", name="Audit").is_visible()
    for route, ready in (("#/models", "tbody tr"), ("#/backtest", "#equity-chart canvas"), ("#/plan", "form")):
        page.goto(page.path(f"/ui/{route}"))
        page.locator(ready).first.wait_for(timeout=30_000)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, route  # nothing wider than the screen
        page.shot(f"narrow-{route.strip('#/')}")
    # An admin page tried anyway: the API's 403 in the alert (and the browser's own line for it).
    page.allow_console(r"status of 403")
    page.goto(page.path("/ui/#/audit"))
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text().startswith("403 forbidden:")
    page.shot("narrow-forbidden")
