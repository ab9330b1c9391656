"""Live performance: the audit log of a service answering for historical dates, joined with the
returns that realised, scores exactly what the offline evaluation scores."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.tiny_market import OTHER, USER, auth, in_process_service, tiny_settings
from rayfolio.cluster.served import production_ensemble
from rayfolio.data.conventions import CASH
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.deployments import load_panel
from rayfolio.serving.live_performance import (
    HorizonPerformance,
    LivePerformanceError,
    PerformanceConfig,
    Window,
    export_gauges,
    live_performance,
    parse_window,
    portfolio_returns,
    rank_ic_by_date,
    read_recommendations,
    verdict,
)
from rayfolio.training.metrics import daily_rank_ic, evaluate_forecast, hit_rate
from rayfolio.training.registry import ModelRegistry

DATES = range(530, 700, 6)  # date indices served, test period; the last ones' 20-day labels have not realised


@pytest.fixture(scope="module")
def served(ray_session, tmp_path_factory):
    """The service in-process (create_app + RecommendationService) answering two clients with different
    profiles on the same historical dates at 20 days, one of them also at 5 days."""
    settings = tiny_settings(tmp_path_factory.mktemp("live"))
    client = TestClient(in_process_service(settings))
    panel = load_panel(settings)
    responses = []
    for t in DATES:
        as_of = str(panel.dates[t])
        for key, profile in ((USER, {"risk_tolerance": 0.2, "max_position": 0.3}),
                             (OTHER, {"risk_tolerance": 0.9, "max_position": 0.5}),
                             (USER, {"risk_tolerance": 0.5, "horizon_days": 5})):  # fmt: skip
            body = {"portfolio": {}, "risk_profile": {"horizon_days": 20, **profile}, "as_of": as_of}
            r = client.post("/v1/recommendations", json=body, headers=auth(key))
            assert r.status_code == 200, r.text
            responses.append((t, body["risk_profile"]["horizon_days"], r.json()))
    return settings, panel, responses


def offline_rank_ic(settings, panel, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The offline evaluation: the production ensemble's forecasts against the panel's labels."""
    ensemble = production_ensemble(ModelRegistry(settings.registry), panel)
    ts = np.array(DATES)
    h = panel.horizons.index(horizon)
    pred = np.stack([f.expected_return[:, h] for f in ensemble.forecast_many(ts)])  # (T, N)
    label = panel.labels[ts, :, h]  # (T, N)
    return pred, label, daily_rank_ic(pred, label)


@pytest.mark.parametrize("horizon", [20, 5])
def test_replayed_dates_score_the_offline_rank_ic(served, horizon):
    settings, panel, _ = served
    config = PerformanceConfig(days=len(DATES))
    report = live_performance(settings.audit_url, FeatureStore(settings.store), Window(), config)
    (live,) = [p for p in report.horizons if p.horizon == horizon]
    pred, label, offline = offline_rank_ic(settings, panel, horizon)
    dates = pd.DatetimeIndex(panel.dates[list(DATES)])
    np.testing.assert_allclose(live.rank_ic.reindex(dates).to_numpy(), offline, rtol=0, atol=1e-9)
    realised = np.isfinite(label).any(axis=1)
    assert 0 < realised.sum() < len(DATES)  # both scored and pending dates
    assert np.isfinite(offline[realised]).all() and live.summary()["pending_dates"] == (~realised).sum()
    assert live.summary()["scored_dates"] == realised.sum()
    metrics = evaluate_forecast(pred[realised], label[realised], np.zeros_like(label[realised]))
    assert live.summary()["rank_ic_mean_all"] == pytest.approx(metrics.rank_ic, abs=1e-9)
    assert live.summary()["hit_rate"] == pytest.approx(hit_rate(pred[realised], label[realised]), abs=1e-12)


def test_each_recommendation_is_one_portfolio_against_an_independent_hand_computation(served):
    settings, panel, responses = served
    report = live_performance(settings.audit_url, FeatureStore(settings.store), Window(), PerformanceConfig())
    (live,) = [p for p in report.horizons if p.horizon == 20]
    store = FeatureStore(settings.store).to_pandas(["label_fwd_20d"])  # float64 (the panel keeps float32)
    by_date = {d: dict(zip(g["symbol"], g["label_fwd_20d"], strict=True)) for d, g in store.groupby("date")}
    checked = 0
    for t, horizon, response in responses:
        if horizon != 20:
            continue
        row = live.portfolios.loc[(response["request_id"], pd.Timestamp(panel.dates[t]))]
        labels = by_date[pd.Timestamp(panel.dates[t])]
        assert set(labels) == set(response["expected_returns"])
        if any(math.isnan(v) for v in labels.values()):
            assert row.isna().all()  # pending: counted, not scored
            continue
        served_return = sum(w * (math.exp(labels[s]) - 1) for s, w in response["target_weights"].items() if s != CASH)
        equal_weight = sum(math.exp(v) - 1 for v in labels.values()) / len(labels)
        assert row["served"] == pytest.approx(served_return, abs=1e-12)
        assert row["equal_weight"] == pytest.approx(equal_weight, abs=1e-12)
        assert row["excess"] == pytest.approx(served_return - equal_weight, abs=1e-12)
        checked += 1
    assert checked >= 40  # two clients' portfolios on each realised date: forecasts deduplicated, portfolios not
    summary = live.summary()
    assert summary["portfolios"] == checked and summary["pending_portfolios"] == 2 * summary["pending_dates"]
    assert len(live.rank_ic) == len(DATES)


def test_the_report_keeps_the_contract_and_its_json_has_no_nan(served, tmp_path):
    settings, _, _ = served
    report = live_performance(settings.audit_url, FeatureStore(settings.store), parse_window("2002-03-01:"),
                              PerformanceConfig(ic_floor=0.5, days=10))  # fmt: skip
    written = json.loads(report.write(tmp_path).read_text())
    assert written["level"] in {"warning", "critical"} and written["reasons"]  # untrained models: IC well below 0.5
    assert written["window"] == ["2002-03-01", _served_dates(served)[-1].isoformat()]
    assert dt.datetime.fromisoformat(written["created_at"]).tzinfo is not None
    assert set(written["horizons"]) == {"5", "20"} and written["horizons"]["20"]["rank_ic_dates"] == 10
    assert min(written["horizons"]["20"]["rank_ic"]) >= "2002-03-01"
    assert report.recommendations == 3 * sum(d >= dt.date(2002, 3, 1) for d in _served_dates(served))


def _served_dates(served) -> list[dt.date]:
    _, panel, _ = served
    return [panel.dates[t].astype(dt.date) for t in DATES]


def test_the_gauges_reach_rays_prometheus_export(served):
    import re
    import time

    import httpx
    import ray

    settings, _, _ = served
    report = live_performance(settings.audit_url, FeatureStore(settings.store), Window(), PerformanceConfig())
    assert export_gauges(report)
    expected = report.horizons[-1].summary()["rank_ic_mean"]
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, value = time.monotonic() + 60, None
    # Exported every few seconds, by the held gauges' actor the whole session shares: a value an
    # earlier test set may show until this one's is exported.
    while value != pytest.approx(expected) and time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        found = re.search(r'^ray_rayfolio_live_rank_ic\{[^}]*horizon="20"[^}]*\} (\S+)$', text, flags=re.M)
        value = float(found.group(1)) if found else None
        time.sleep(0 if value == pytest.approx(expected) else 2)
    assert value == pytest.approx(expected)
    assert re.search(r'^ray_rayfolio_live_excess_return\{[^}]*horizon="5"', text, flags=re.M)


# ----- the join's pieces, without a service ---------------------------------------------------


def test_realised_labels_arriving_later_never_move_an_earlier_dates_rank_ic():
    """Point in time: labels realising for later dates (the store growing) leave every earlier
    date's Rank IC as it was; the newly realised dates go from pending to scored."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2024-01-01", periods=30)
    forecasts = pd.DataFrame(rng.normal(size=(30, 8)), index=dates, columns=[f"S{i}" for i in range(8)])
    labels = pd.DataFrame(rng.normal(size=(30, 8)), index=dates, columns=forecasts.columns)
    later = rank_ic_by_date(forecasts, labels)
    earlier_labels = labels.copy()
    earlier_labels.iloc[20:] = np.nan  # not realised yet
    earlier = rank_ic_by_date(forecasts, earlier_labels)
    pd.testing.assert_series_equal(earlier.iloc[:20], later.iloc[:20])
    assert earlier.iloc[20:].isna().all() and later.notna().all()
    # The store's symbols in another order, and one the service never forecast: the same Rank IC.
    shuffled = labels[labels.columns[::-1]].assign(EXTRA=1.0)
    pd.testing.assert_series_equal(rank_ic_by_date(forecasts, shuffled), later)


def test_portfolio_returns_against_stored_values():
    """Two recommendations on one date, one on a date whose labels have not realised."""
    d1, d2 = pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-03")
    forecasts = pd.DataFrame({"A": [0.01, 0.02], "B": [0.0, 0.01], "C": [-0.01, 0.0]}, index=[d1, d2])
    labels = pd.DataFrame({"A": [math.log(1.10), np.nan], "B": [math.log(0.95), np.nan], "C": [0.0, np.nan]},
                          index=[d1, d2])  # fmt: skip
    index = pd.MultiIndex.from_tuples([("r1", d1), ("r2", d1), ("r3", d2)], names=["request_id", "as_of"])
    weights = pd.DataFrame({"A": [0.5, 0.0, 0.2], "B": [0.3, 0.0, 0.0]}, index=index)  # r1: 0.2 cash, r2: all cash
    out = portfolio_returns(weights, labels, forecasts)
    # r1: 0.5 * 0.10 + 0.3 * (-0.05) = 0.035; 1/N: (0.10 - 0.05 + 0) / 3 = 0.016666...
    np.testing.assert_allclose(out.loc["r1"].to_numpy().ravel(), [0.035, 0.05 / 3, 0.035 - 0.05 / 3], atol=1e-15)
    np.testing.assert_allclose(out.loc["r2"].to_numpy().ravel(), [0.0, 0.05 / 3, -0.05 / 3], atol=1e-15)
    assert out.loc["r3"].isna().all().all()


def _performance(ic: list[float], days: int = 60) -> HorizonPerformance:
    dates = pd.bdate_range("2024-01-01", periods=len(ic))
    empty = pd.DataFrame(columns=["served", "equal_weight", "excess"],
                         index=pd.MultiIndex.from_tuples([], names=["request_id", "as_of"]))  # fmt: skip
    rank_ic = pd.Series(ic, index=dates, dtype=float)
    recent = pd.DatetimeIndex(dates[rank_ic.notna().to_numpy()][-days:])
    return HorizonPerformance(20, rank_ic, float("nan"), empty, recent)


@pytest.mark.parametrize(
    ("ic", "level", "fragment"),
    [
        ([np.nan] * 5, "info", "insufficient data: no served forecast has realised returns yet (5 pending)"),
        ([0.05] * 10, "info", "insufficient data: 10 scored dates, 20 needed"),
        ([-0.05] * 10, "warning", "below the floor 0, but fewer than 20 dates are scored"),
        ([-0.05] * 25, "critical", "mean Rank IC -0.0500 over the last 25 scored dates is below the floor 0"),
        ([0.05] * 25, "info", None),
        ([-0.3] * 100 + [0.01] * 60, "info", None),  # only the last 60 scored dates count
        ([0.3] * 100 + [-0.01] * 60 + [np.nan] * 20, "critical", "over the last 60 scored dates"),
    ],
)
def test_levels(ic, level, fragment):
    got, reasons = verdict(_performance(ic), PerformanceConfig())
    assert got == level
    assert (reasons == ()) if fragment is None else (len(reasons) == 1 and fragment in reasons[0]), reasons


@pytest.mark.parametrize(
    ("text", "window"),
    [(None, Window()), ("2024-01-01:2024-06-30", Window(dt.date(2024, 1, 1), dt.date(2024, 6, 30))),
     ("2024-01-01:", Window(dt.date(2024, 1, 1), None)), (":2024-06-30", Window(None, dt.date(2024, 6, 30)))],
)  # fmt: skip
def test_windows(text, window):
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["2024-01-01", "2024-13-01:2024-12-31", "2024-06-30:2024-01-01", "yesterday:today"])
def test_a_bad_window_is_one_line(text):
    with pytest.raises(LivePerformanceError, match=r"^--window") as caught:
        parse_window(text)
    assert len(str(caught.value).splitlines()) == 1


def test_an_unknown_audit_log_is_refused_and_never_created(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(LivePerformanceError, match="no such file"):
        read_recommendations(sqlite_url(missing))
    assert not missing.exists()
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("create table t (x int)").close()
    with pytest.raises(LivePerformanceError, match="not an audit log"):
        read_recommendations(sqlite_url(other))
    with pytest.raises(LivePerformanceError, match="cannot be read"):
        read_recommendations("nosuchdialect://user:secret@host/db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LivePerformanceError, match="cannot be read"):
        read_recommendations(str(garbage))
    with pytest.raises(LivePerformanceError) as caught:
        read_recommendations("postgresql+nosuchdriver://user:secret@host/db")
    assert "secret" not in str(caught.value)
    AuditLog(sqlite_url(tmp_path / "empty.db"))
    assert read_recommendations(str(tmp_path / "empty.db")) == []  # a plain path is a SQLite file
