"""The Ray Data pipeline against the single-process path and the independent
pandas implementation; sources, store manifest and checksums."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.pandas_features import pandas_features
from rayfolio.data.features import FEATURES, available_features
from rayfolio.data.pipeline import build_feature_dataset, build_features_local
from rayfolio.data.sources import SyntheticSource, file_source, sp500_source, symbols_partition_units
from rayfolio.data.store import FeatureStore, FeatureStoreError, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig
from tests.data.panels import small_panel, split_by_date, split_by_symbol, write_csv

HORIZONS = (5, 20, 60)


def ray_frame(source, shuffle=None) -> pd.DataFrame:
    frame = build_feature_dataset(source, HORIZONS, shuffle=shuffle).to_pandas()
    return canonical(frame)


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["date"] = pd.to_datetime(frame["date"])
    frame["symbol"] = frame["symbol"].astype(str)
    if "sector" in frame:
        frame["sector"] = frame["sector"].astype(str)
    values = [c for c in frame.columns if c not in ("date", "symbol", "sector")]
    frame[values] = frame[values].astype("float64")  # Ray hands back Arrow-backed dtypes
    return frame.sort_values(["symbol", "date"], ignore_index=True)


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return small_panel(n_assets=5, n_days=400, seed=11)


def test_shuffle_plan_matches_single_process(panel, tmp_path, ray_session):
    source = file_source(str(split_by_date(panel, tmp_path / "by-date")))
    assert not symbols_partition_units(source)  # symbols span files: needs the shuffle
    got = ray_frame(source)
    want = canonical(build_features_local(source, HORIZONS))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert len(got) == len(panel)


def test_fused_plan_matches_single_process_and_shuffle(panel, tmp_path, ray_session):
    source = file_source(str(split_by_symbol(panel, tmp_path / "by-symbol")))
    assert symbols_partition_units(source)
    fused = ray_frame(source)
    pd.testing.assert_frame_equal(fused, canonical(build_features_local(source, HORIZONS)), check_exact=True)
    pd.testing.assert_frame_equal(fused, ray_frame(source, shuffle=True), check_exact=True)


def test_pipeline_matches_independent_pandas_implementation(panel, tmp_path, ray_session):
    source = file_source(str(split_by_date(panel, tmp_path / "by-date")))
    got = ray_frame(source)
    reference = pandas_features(panel.assign(date=pd.to_datetime(panel["date"])), HORIZONS)
    want = canonical(reference)
    for column in [f.name for f in FEATURES] + [f"label_fwd_{h}d" for h in HORIZONS]:
        np.testing.assert_allclose(got[column], want[column], rtol=1e-8, atol=1e-10, equal_nan=True, err_msg=column)


def test_embedded_sp500_sample(ray_session):
    source = sp500_source()
    frame = ray_frame(source)
    assert frame["symbol"].nunique() == 20 and len(frame) == 20 * 8313
    assert frame["date"].min() == pd.Timestamp("1990-01-02") and frame["date"].max() == pd.Timestamp("2022-12-28")
    # Close only: no ATR, OBV or volume ratio, and every close-based feature.
    assert "atr_14" not in frame and "obv" not in frame
    assert {"rsi_14", "macd", "mom_12_1", "vol_regime", "label_fwd_60d"} <= set(frame.columns)


def test_wide_csv_and_uri_sources(tmp_path, ray_session):
    panel = small_panel(n_assets=3, n_days=120)
    wide = panel.pivot(index="date", columns="symbol", values="close").reset_index()
    path = write_csv(wide, tmp_path / "wide.csv")
    from_wide = ray_frame(file_source(f"file://{path}"))
    long_path = write_csv(panel[["date", "symbol", "close"]], tmp_path / "long.csv")
    from_long = ray_frame(file_source(str(long_path)))
    pd.testing.assert_frame_equal(from_wide, from_long, check_exact=True)


def test_zone_aware_dates_keep_their_local_date(tmp_path):
    path = tmp_path / "tz.csv"
    path.write_text(
        "date,symbol,close\n2020-01-02T00:00:00+09:00,AAA,10\n2020-01-03T00:00:00+09:00,AAA,11\n"
        "2020-01-06T09:30:00-05:00,BBB,5\n2020-01-07T09:30:00-04:00,BBB,6\n"
    )
    # Two files would each be consistent; here one column mixes zones far apart.
    with pytest.raises(ValueError, match="mixed time zones"):
        file_source(str(path)).read_unit(0)
    path.write_text("date,symbol,close\n2020-01-02T00:00:00+09:00,AAA,10\n2020-01-03T00:00:00+09:00,AAA,11\n")
    dates = file_source(str(path)).read_unit(0).column("date").to_pylist()
    assert [str(d) for d in dates] == ["2020-01-02", "2020-01-03"]


def test_synthetic_panel_is_seeded_and_slice_invariant():
    cfg = SyntheticPanelConfig(n_assets=7, n_days=300, seed=5)
    by_three = pd.concat(SyntheticSource(cfg, assets_per_unit=3).read_unit(u).to_pandas() for u in range(0, 7, 3))
    by_two = pd.concat(SyntheticSource(cfg, assets_per_unit=2).read_unit(u).to_pandas() for u in range(0, 7, 2))
    cols = ["date", "symbol", "open", "high", "low", "close", "volume"]
    pd.testing.assert_frame_equal(by_three[cols].reset_index(drop=True), by_two[cols].reset_index(drop=True))
    other_seed = SyntheticSource(SyntheticPanelConfig(n_assets=7, n_days=300, seed=6)).read_unit(0).to_pandas()
    assert not np.allclose(other_seed["close"].to_numpy(), by_three["close"].to_numpy()[: len(other_seed)])


def test_synthetic_panel_has_correlation_and_regimes():
    from rayfolio.data.synthetic import generate_panel, market_state

    cfg = SyntheticPanelConfig(n_assets=12, n_days=2000, seed=1)
    frame = generate_panel(cfg)
    returns = np.log(frame.pivot(index="date", columns="symbol", values="close")).diff().dropna()
    corr = returns.corr().to_numpy()[np.triu_indices(12, 1)]
    assert 0.2 < corr.mean() < 0.9  # a common market factor, not one asset twelve times
    stressed = market_state(cfg).stressed[1:]
    assert 0.05 < stressed.mean() < 0.5
    daily_vol = returns.std(axis=1).to_numpy()
    assert daily_vol[stressed].mean() > 1.8 * daily_vol[~stressed].mean()
    kurtosis = pd.Series(returns.to_numpy().ravel()).kurt()
    assert kurtosis > 1.0  # fat tails


def test_store_manifest_and_checksums(tmp_path, ray_session):
    source = SyntheticSource(SyntheticPanelConfig(n_assets=6, n_days=300, seed=2), assets_per_unit=4)
    out = tmp_path / "store"
    summary = prepare_feature_store(source, out, HORIZONS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == summary.rows == 6 * 300 and manifest["symbols"] == 6
    assert manifest["source"]["content_sha256"] == source.content_hash()
    assert [f["name"] for f in manifest["features"]] == [f.name for f in FEATURES]
    assert [label["horizon"] for label in manifest["labels"]] == list(HORIZONS)
    assert manifest["date_range"][0] == "2000-01-03"
    store = FeatureStore(out)
    store.verify()
    assert store.dataset().count() == summary.rows  # the Ray view training reads
    frame = store.to_pandas(start="2000-06-01", end="2000-06-30")
    assert frame["date"].between("2000-06-01", "2000-06-30").all() and frame["symbol"].nunique() == 6
    assert set(manifest["columns"]) == {"date", "symbol", "sector", *store.feature_names, *store.label_names}
    # Tampering with a part is caught.
    part = out / next(iter(manifest["files"]))
    part.write_bytes(part.read_bytes()[:-8] + b"tampered")
    with pytest.raises(FeatureStoreError, match="sha256 does not match"):
        store.verify()


def test_republish_replaces_a_previous_store_whole(tmp_path, ray_session):
    out = tmp_path / "store"
    first = prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=3, n_days=200)), out, HORIZONS)
    second = prepare_feature_store(SyntheticSource(SyntheticPanelConfig(n_assets=5, n_days=200)), out, HORIZONS)
    assert (first.symbols, second.symbols) == (3, 5)
    assert FeatureStore(out).to_pandas()["symbol"].nunique() == 5
    assert [p.name for p in tmp_path.iterdir()] == ["store"]  # no staging or backup left


def test_alpha158_set_and_label_lag_through_ray_into_the_store(tmp_path, ray_session):
    source = SyntheticSource(SyntheticPanelConfig(n_assets=4, n_days=260, seed=7), assets_per_unit=2)
    prepare_feature_store(source, tmp_path / "basic", HORIZONS)
    summary = prepare_feature_store(source, tmp_path / "rich", HORIZONS, feature_set="alpha158", label_lag=1)
    basic, rich = FeatureStore(tmp_path / "basic"), FeatureStore(tmp_path / "rich")
    assert (basic.feature_set, basic.label_lag, basic.manifest["feature_set"]) == ("basic", 0, "basic")
    assert (rich.feature_set, rich.label_lag, summary.feature_set) == ("alpha158", 1, "alpha158")
    names = [f.name for f in available_features(source.value_columns, "alpha158")]
    assert list(rich.feature_names) == names and len(names) == len(FEATURES) + 95
    assert [label["definition"].split(":")[0] for label in rich.manifest["labels"]] == [
        f"log(close[t+{1 + h}] / close[t+1])" for h in HORIZONS
    ]
    assert "t+1..t+1+h" in rich.manifest["point_in_time"] and "t+1..t+h " in basic.manifest["point_in_time"]
    a, b = basic.to_pandas(), rich.to_pandas()
    # The basic columns do not move when the richer set is asked for.
    pd.testing.assert_frame_equal(a[list(basic.feature_names)], b[list(basic.feature_names)], check_exact=True)
    for label in rich.label_names:  # lag 1: the lag-0 label of the next row, symbol by symbol
        np.testing.assert_array_equal(b[label].to_numpy(), a.groupby("symbol")[label].shift(-1).to_numpy())
    local = build_features_local(source, HORIZONS, feature_set="alpha158", label_lag=1)
    pd.testing.assert_frame_equal(canonical(b), canonical(local), check_exact=True)


LARGER_THAN_STORE = """
import json, sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rayfolio.data.sources import SyntheticSource, file_source, symbols_partition_units
from rayfolio.data.store import prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig, generate_assets, market_state

out, layout = Path(sys.argv[1]), sys.argv[2]
store_bytes = 80 << 20
config = SyntheticPanelConfig(n_assets=500, n_days=2500, seed=4)
if layout == "synthetic":  # read units hold whole symbols: no shuffle
    source = SyntheticSource(config, assets_per_unit=10)
else:  # files by date range: every symbol spans files, rows are shuffled by symbol
    state, files = market_state(config), out / "panel"
    files.mkdir(parents=True)
    panel = generate_assets(config, np.arange(config.n_assets), state)
    for k, dates in enumerate(np.array_split(state.dates, 12)):
        lo, hi = pa.scalar(dates[0].item()), pa.scalar(dates[-1].item())
        pq.write_table(panel.filter(pc.and_(pc.greater_equal(panel["date"], lo), pc.less_equal(panel["date"], hi))),
                       files / f"part-{k:02d}.parquet")
    del panel
    source = file_source(str(files))
    assert not symbols_partition_units(source)
# address="local": a cluster of this process's own, ended when it exits.
ray.init(address="local", num_cpus=2, object_store_memory=store_bytes, include_dashboard=False, log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
summary = prepare_feature_store(source, out / "store", (5, 20, 60))
print(json.dumps({"rows": summary.rows, "columns": 2 + len(summary.features) + len(summary.labels),
                  "store_bytes": store_bytes}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["synthetic", "files-by-date"])
def test_panel_larger_than_object_store_still_completes(layout, tmp_path):
    """Features several times the object store's size stream (or, when rows
    must be shuffled by symbol, spill) through it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", LARGER_THAN_STORE, str(tmp_path), layout],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == 500 * 2500
    assert result["rows"] * result["columns"] * 8 > 3 * result["store_bytes"]
    assert FeatureStore(tmp_path / "store").manifest["rows"] == result["rows"]
