"""The console's report routes on a tiny run written by the project's own backtest and forecast
code (bench/tiny_report.py), each number checked against an independent computation."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy.stats import spearmanr

from bench.tiny_market import USER, auth, in_process_service, register_tiny_models, tiny_settings
from bench.tiny_report import write_tiny_run
from rayfolio.data.store import FeatureStore
from rayfolio.serving import reports
from rayfolio.serving.errors import RequestError
from rayfolio.training.registry import ModelRegistry


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("reports"))
    write_tiny_run(settings)
    register_tiny_models(ModelRegistry(settings.registry), FeatureStore(settings.store), seed=1)  # v0002, staging
    with TestClient(in_process_service(settings)) as client:
        yield client, settings


def test_the_backtest_route_gives_metrics_and_curves_compounded_from_the_returns(run):
    client, settings = run
    r = client.get("/v1/backtest", headers=auth(USER))
    assert r.status_code == 200, r.text
    out = r.json()
    metrics = json.loads((settings.report_dir / "metrics.json").read_text())
    returns = pd.read_parquet(settings.report_dir / "returns.parquet")
    assert out["run"] == settings.report_dir.name and out["strategies"] == list(metrics)  # best Sharpe first
    assert out["as_of"] == str(returns.index[-1].date()) and out["cost_bps"] is None  # the tiny run has no config
    assert out["metrics"]["equal_weight"]["sharpe"] == pytest.approx(metrics["equal_weight"]["sharpe"])
    assert len(out["curves"]["dates"]) == len(returns) <= reports.MAX_POINTS  # 178 days: every one
    for name in out["strategies"]:
        r_ = returns[name].to_numpy()
        equity = np.cumprod(1 + r_)
        peak, drawdown = 1.0, []
        for value in equity:  # the running peak by hand, the start's 1 included
            peak = max(peak, value)
            drawdown.append(value / peak - 1)
        np.testing.assert_allclose(out["curves"]["equity"][name], equity, rtol=1e-12)
        np.testing.assert_allclose(out["curves"]["drawdown"][name], drawdown, rtol=1e-12, atol=1e-15)
        # The report's max drawdown is the deepest point of this curve.
        assert -min(drawdown) == pytest.approx(metrics[name]["max_drawdown"], rel=1e-9)
    assert client.get("/v1/backtest").status_code == 401  # the data needs a key; the pages do not
    assert client.get("/ui/").status_code == 200 and client.get("/docs").status_code == 200


def test_long_curves_are_sampled_evenly_keeping_the_first_and_last_day(run, tmp_path):
    _, settings = run
    out = reports.backtest(settings.report_dir, max_points=50)
    returns = pd.read_parquet(settings.report_dir / "returns.parquet")
    dates = out["curves"]["dates"]
    assert len(dates) == 50 and dates[0] == str(returns.index[0].date()) and dates[-1] == out["as_of"]
    gaps = np.diff(pd.DatetimeIndex(returns.index).get_indexer(pd.DatetimeIndex(dates)))
    assert gaps.min() >= 3 and gaps.max() <= 4  # 177 steps over 49 gaps
    full = np.cumprod(1 + returns["hrp"].to_numpy())
    assert out["curves"]["equity"]["hrp"][-1] == pytest.approx(full[-1], rel=1e-12)
    assert reports.sample_points(3, 500).tolist() == [0, 1, 2]


def test_no_backtest_is_a_404_naming_the_run_and_the_newest_backtest_wins(run, tmp_path):
    _, settings = run
    empty = tmp_path / "fresh-run"
    empty.mkdir()
    with pytest.raises(RequestError, match="run 'fresh-run' has no backtest yet") as caught:
        reports.backtest(empty)
    assert caught.value.status == 404
    copy = tmp_path / "copied"
    shutil.copytree(settings.report_dir, copy, ignore=shutil.ignore_patterns("store", "registry", "*.db*"))
    (copy / "backtest").mkdir()
    returns = pd.read_parquet(copy / "returns.parquet")[["equal_weight"]].iloc[:100]
    returns.to_parquet(copy / "backtest" / "returns.parquet")
    (copy / "backtest" / "metrics.json").write_text(json.dumps({"equal_weight": {"sharpe": 1.5}}))
    os.utime(copy / "metrics.json", ns=(1, 1))  # the run's own backtest is the older one
    out = reports.backtest(copy)
    assert out["run"] == "copied/backtest" and out["strategies"] == ["equal_weight"] and out["cost_bps"] is None
    assert out["as_of"] == str(returns.index[-1].date()) and out["metrics"]["equal_weight"]["sharpe"] == 1.5
    (copy / "config.yaml").write_text("allocation:\n  env:\n    cost_bps: 7.5\n")  # the run's config names the costs
    assert reports.backtest(copy)["cost_bps"] == 7.5


def _rank_ic_by_year(settings, horizon: int) -> dict[str, float]:
    """Spearman per date with scipy, against the store's label column, then the mean per year."""
    forecasts = pd.read_parquet(settings.report_dir / "forecasts.parquet")
    forecasts = forecasts[(forecasts.horizon == horizon) & (forecasts.split == "test")]
    labels = FeatureStore(settings.store).to_pandas()[["date", "symbol", f"label_fwd_{horizon}d"]]
    both = forecasts.merge(labels, on=["date", "symbol"]).dropna()
    daily = {d: spearmanr(g["forecast"], g[f"label_fwd_{horizon}d"])[0] for d, g in both.groupby("date") if len(g) >= 3}
    series = pd.Series(daily).dropna()
    return {str(y): v for y, v in series.groupby(pd.DatetimeIndex(series.index).year).mean().items()}


def test_compare_gives_each_versions_metrics_and_the_rank_ic_by_year(run):
    client, settings = run
    r = client.get("/v1/models/compare", params={"models": "lstm-forecaster,lstm-forecaster:v0002"},
                   headers=auth(USER))  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    first, second = out["models"]
    assert (first["version"], first["stage"], second["version"], second["stage"]) == ("v0001", "production",
                                                                                      "v0002", "staging")  # fmt: skip
    assert first["family"] == "lstm" and first["created_at"]
    assert first["metrics"]["validation"] == {"rank_ic@5": 0.02, "rank_ic@20": 0.02, "rank_ic@60": 0.02}
    expected = _rank_ic_by_year(settings, 20)
    assert list(out["rank_ic_by_year"]) == ["lstm"] and set(out["rank_ic_by_year"]["lstm"]) == set(expected)
    for year, value in expected.items():
        assert out["rank_ic_by_year"]["lstm"][year] == pytest.approx(value, abs=1e-9)
    assert "walk-forward out-of-sample forecasts" in out["rank_ic_source"] and "20-day" in out["rank_ic_source"]
    at_5 = client.get("/v1/models/compare", params={"models": "lstm-forecaster,ppo-allocator", "horizon": 5},
                      headers=auth(USER)).json()  # fmt: skip
    assert at_5["models"][1]["family"] == "ppo" and at_5["models"][1]["metrics"]["overall"] == {
        "validation_sharpe": 0.5
    }
    for year, value in _rank_ic_by_year(settings, 5).items():
        assert at_5["rank_ic_by_year"]["lstm"][year] == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"models": "lstm-forecaster"}, "models"),  # the declared pattern: 2 to 6 entries
        ({"models": ",".join(["lstm-forecaster"] * 7)}, "models"),
        ({"models": "lstm-forecaster,../etc"}, "models"),
        ({"models": "lstm-forecaster,ppo-allocator", "horizon": 7}, "horizon: must be one of [5, 20, 60]"),
        ({"models": "lstm-forecaster,ppo-allocator", "split": "train"}, "split"),
        ({}, "models"),
    ],
)
def test_bad_compare_requests_are_422_naming_the_parameter(run, params, fragment):
    client, _ = run
    r = client.get("/v1/models/compare", params=params, headers=auth(USER))
    assert r.status_code == 422 and fragment in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    ("models", "fragment"),
    [("lstm-forecaster,nope", "models: no model named 'nope'"),
     ("lstm-forecaster,lstm-forecaster:v0099", "models: lstm-forecaster has no version 'v0099'")],
)  # fmt: skip
def test_comparing_a_model_or_version_not_registered_is_404(run, models, fragment):
    """Well-formed, naming what is not there: 404, as GET /v1/models/{name} answers (a 422 would refuse a
    request the document allows)."""
    client, _ = run
    r = client.get("/v1/models/compare", params={"models": models}, headers=auth(USER))
    assert r.status_code == 404 and fragment in r.json()["error"]["message"], r.text


def test_the_rank_ic_is_cached_per_file_version(run):
    _, settings = run
    rank_ic = reports.RankIcByYear(settings.report_dir, settings.store)
    first, _ = rank_ic(20, "test")
    assert rank_ic(20, "test")[0] is first and len(rank_ic.cache) == 1  # the same object: not recomputed
    path = settings.report_dir / "forecasts.parquet"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))  # a rewritten file
    again, _ = rank_ic(20, "test")
    assert again is not first and again == first and len(rank_ic.cache) == 1
