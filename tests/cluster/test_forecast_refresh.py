"""forecasts refresh: the production forecasts of new store dates, logged once, equal to what the
production ensemble (the backtest's and the service's) forecasts on the appended store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bench.tiny_market import register_tiny_models
from rayfolio.cluster.forecast_refresh import refresh_forecasts
from rayfolio.cluster.served import production_ensemble
from rayfolio.data.append import append_to_store
from rayfolio.data.sources import SyntheticSource, within
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.forecast_log import ForecastLog, forecast_rows, models_key
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry

SOURCE = SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=700, seed=8))
CUT = dt.date(2002, 6, 28)


@pytest.fixture(scope="module")
def held_back(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("refresh")
    prepare_feature_store(within(SOURCE, end=CUT), root / "store", (5, 20, 60))
    register_tiny_models(ModelRegistry(root / "registry"), FeatureStore(root / "store"))
    return root


def test_refresh_logs_new_dates_once_and_equals_the_production_ensemble(held_back):
    root = held_back
    log = root / "forecasts.parquet"
    first = refresh_forecasts(root / "store", root / "registry", log)
    assert first.dates > 0 and first.first >= "2002-01-01" and first.last <= str(CUT)
    assert refresh_forecasts(root / "store", root / "registry", log).dates == 0  # up to date
    append_to_store(root / "store", within(SOURCE, start=CUT + dt.timedelta(days=1)))
    second = refresh_forecasts(root / "store", root / "registry", log)
    assert second.first > str(CUT) and second.dates > 0

    logged = ForecastLog(log).read()
    assert not logged.duplicated(["date", "symbol", "horizon", "models"]).any()
    panel = Panel.from_store(FeatureStore(root / "store"))
    registry = ModelRegistry(root / "registry")
    versions = {v.name: v.version for v in registry.production("forecaster")}
    ts = panel.date_index(np.sort(logged["date"].unique()))
    expected = forecast_rows(production_ensemble(registry, panel).forecast_many(list(ts)), panel.symbols, versions)
    assert (logged["models"] == models_key(versions)).all()
    order = ["date", "symbol", "horizon"]
    got, want = logged.sort_values(order, ignore_index=True), expected.sort_values(order, ignore_index=True)
    pd.testing.assert_frame_equal(got[order], want[order], check_dtype=False)
    for column in ("expected_return", "z", "confidence"):
        np.testing.assert_allclose(got[column].to_numpy(float), want[column].to_numpy(float), rtol=0, atol=1e-12)


def test_the_log_refuses_a_date_twice_by_the_same_models(tmp_path):
    rows = pd.DataFrame({"date": pd.to_datetime(["2020-01-02"]), "symbol": ["A"], "horizon": [5],
                         "expected_return": [0.01], "z": [1.0], "confidence": [0.5], "models": ["lstm=1"]})  # fmt: skip
    log = ForecastLog(tmp_path / "log.parquet")
    assert log.append(rows) == 1
    with pytest.raises(ValueError, match="already holds forecasts for 2020-01-02"):
        log.append(rows)
    assert len(log.read()) == 1
    assert log.last_date("lstm=1") == pd.Timestamp("2020-01-02") and log.last_date("lstm=2") is None
