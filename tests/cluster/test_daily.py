"""rayfolio daily on the embedded sample with its last 60 days held back: the appended store equals
the full build, and every step reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from rayfolio.cluster.config import load_config
from rayfolio.cluster.daily import run_daily
from rayfolio.data.sources import sp500_source, within
from rayfolio.data.store import FeatureStore, prepare_feature_store
from tests.data.test_append import assert_same_rows

HORIZONS = (5, 20, 60)


def test_daily_appends_the_held_back_days_to_equal_the_full_build(ray_session, tmp_path):
    full = FeatureStore(prepare_feature_store(sp500_source(), tmp_path / "full", HORIZONS).path)
    dates = np.sort(full.to_pandas(columns=[])["date"].unique())
    cut = pd.Timestamp(dates[-61]).date()  # the last 60 trading days held back
    prepare_feature_store(within(sp500_source(), end=cut), tmp_path / "store", HORIZONS)

    result = run_daily(load_config(None), tmp_path / "store", within(sp500_source(), start=cut),
                       registry=tmp_path / "no-registry", out=tmp_path / "monitor", audit=None)  # fmt: skip

    appended = FeatureStore(tmp_path / "store")
    assert_same_rows(appended.to_pandas(), full.to_pandas())
    assert appended.version == 2 and appended.manifest["appends"][0]["rows"] == 60 * 20
    steps = result.table().set_index("step")
    assert list(steps.index) == ["append", "forecasts refresh", "explain", "drift", "live performance", "check"]
    assert steps.loc["append", "detail"].startswith("1200 rows")
    assert steps.loc["forecasts refresh", "status"] == steps.loc["explain", "status"] == "skipped"
    drift = json.loads((tmp_path / "monitor" / "drift.json").read_text())
    assert drift["level"] == steps.loc["drift", "status"]
    assert result.exit_code == (3 if drift["level"] == "critical" else 0)

    again = run_daily(load_config(None), tmp_path / "store", within(sp500_source(), start=cut),
                      registry=tmp_path / "no-registry", out=tmp_path / "monitor", audit=None)  # fmt: skip
    assert (
        again.table().set_index("step").loc["append", "detail"].startswith("nothing new (1220 bars")
    )  # 61 days: the cut day re-sent
    assert FeatureStore(tmp_path / "store").version == 2
