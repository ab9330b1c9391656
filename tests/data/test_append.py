"""Appends: a store built to D plus the later bars appended in chunks equals a one-shot build."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from rayfolio.data.append import append_to_store
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.sources import file_source
from rayfolio.data.store import FeatureStore, prepare_feature_store
from tests.data.panels import small_panel, write_csv

HORIZONS = (5, 20)


def panel() -> pd.DataFrame:
    """Five symbols over 700 days: NEW starts trading in the appended stretch, SHORT's history at D is
    shorter than the state's tail, GAPPY did not trade on a few days (early, and inside its tail)."""
    frame = small_panel(n_assets=5, n_days=700, seed=11)
    symbols = sorted(frame["symbol"].unique())
    dates = sorted(frame["date"].unique())
    rename = {symbols[0]: "GAPPY", symbols[1]: "STEADY", symbols[3]: "NEW", symbols[4]: "SHORT"}
    frame["symbol"] = frame["symbol"].replace(rename)
    late = (frame["symbol"] == "NEW") & (frame["date"] < dates[660])
    short = (frame["symbol"] == "SHORT") & (frame["date"] < dates[560])
    gaps = (frame["symbol"] == "GAPPY") & frame["date"].isin(dates[605:608] + dates[100:103])
    return frame[~(late | short | gaps)].reset_index(drop=True)


def build(frame: pd.DataFrame, path, **kwargs):
    return prepare_feature_store(file_source(str(write_csv(frame, path.with_suffix(".csv")))), path, HORIZONS, **kwargs)


def append(frame: pd.DataFrame, store, csv):
    return append_to_store(store, file_source(str(write_csv(frame, csv))))


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[["date", "symbol"]], b[["date", "symbol"]])
    for column in a.columns.drop(["date", "symbol"]):
        if not pd.api.types.is_float_dtype(a[column]):
            assert a[column].tolist() == b[column].tolist(), column
            continue
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        assert (np.isnan(x) == np.isnan(y)).all(), f"{column}: NaN pattern differs"
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10, err_msg=column)


@pytest.mark.parametrize(("feature_set", "label_lag"), [("basic", 0), ("alpha158", 1)])
def test_append_in_chunks_equals_a_full_build(tmp_path, ray_session, feature_set, label_lag):
    frame = panel()
    dates = sorted(frame["date"].unique())
    cut, *chunks = dates[600], dates[640], dates[672]
    options = {"feature_set": feature_set, "label_lag": label_lag}
    full = FeatureStore(build(frame, tmp_path / "full", **options).path)
    store = tmp_path / "appended"
    build(frame[frame["date"] <= cut], store, **options)
    before = FeatureStore(store)
    old_parts = dict(before.manifest["files"])
    old_rows = before.to_pandas()

    bounds = [cut, *chunks, dates[-1]]
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        summary = append(frame[(frame["date"] > a) & (frame["date"] <= b)], store, tmp_path / f"chunk-{k}.csv")
        assert summary.version == k + 2 and summary.rows > 0

    appended = FeatureStore(store)
    appended.verify()
    assert_same_rows(appended.to_pandas(), full.to_pandas())
    assert appended.manifest["rows"] == full.manifest["rows"]
    assert appended.manifest["symbols"] == full.manifest["symbols"]
    assert appended.manifest["date_range"] == full.manifest["date_range"]
    assert [a["version"] for a in appended.manifest["appends"]] == [2, 3, 4]
    assert appended.manifest["appends"][1]["new_symbols"] == ["NEW"]
    # The old parts are the same files, byte for byte; their rows' features have not moved.
    for name, sha in old_parts.items():
        assert appended.manifest["files"][name] == sha
    now = appended.to_pandas(end=cut)
    assert now[list(before.feature_names)].equals(old_rows[list(before.feature_names)])
    known = old_rows[list(before.label_names)].notna()
    assert now[list(before.label_names)][known].equals(old_rows[list(before.label_names)][known])


def test_the_ray_dataset_view_carries_the_label_patches(tmp_path, ray_session):
    frame = panel()
    dates = sorted(frame["date"].unique())
    store = tmp_path / "store"
    build(frame[frame["date"] <= dates[650]], store)
    append(frame[frame["date"] > dates[650]], store, tmp_path / "new.csv")
    rows = FeatureStore(store).dataset().to_pandas().sort_values(["date", "symbol"], ignore_index=True)
    expected = FeatureStore(store).to_pandas()
    rows["date"] = pd.to_datetime(rows["date"])
    floats = [c for c in expected.columns if pd.api.types.is_float_dtype(expected[c])]
    rows[floats] = rows[floats].astype("float64")  # Ray hands back Arrow-backed columns (null for NaN)
    pd.testing.assert_frame_equal(rows[expected.columns], expected, check_dtype=False)


def test_resending_bars_changes_nothing_and_a_restatement_is_refused(tmp_path, ray_session):
    frame = panel()
    dates = sorted(frame["date"].unique())
    store = tmp_path / "store"
    build(frame[frame["date"] <= dates[650]], store)
    later = frame[frame["date"] > dates[640]]  # ten days overlap the store
    first = append(later, store, tmp_path / "new.csv")
    assert first.skipped_bars > 0 and first.rows == (frame["date"] > dates[650]).sum()
    manifest = FeatureStore(store).manifest
    again = append(later, store, tmp_path / "again.csv")
    assert again.rows == 0 and again.version == first.version
    assert FeatureStore(store).manifest == manifest

    restated = later.copy()
    symbol = "STEADY"
    row = restated.index[(restated["date"] == dates[645]) & (restated["symbol"] == symbol)][0]
    restated.loc[row, ["open", "high", "low", "close"]] *= 1.01  # a consistent bar, at another price
    with pytest.raises(PanelValidationError, match=rf"\({dates[645]}, {symbol}\), column 'close': restatement"):
        append(restated, store, tmp_path / "restated.csv")
    assert FeatureStore(store).manifest == manifest


def test_bars_before_the_last_date_that_the_store_lacks_are_refused(tmp_path, ray_session):
    frame = panel()
    dates = sorted(frame["date"].unique())
    store = tmp_path / "store"
    build(frame[frame["date"] <= dates[650]], store)
    symbol = "GAPPY"
    old = frame[(frame["date"] == dates[90]) & (frame["symbol"] == symbol)]  # long before the stored tail
    assert len(old) == 1
    with pytest.raises(PanelValidationError, match=rf"\({dates[90]}, {symbol}\).*on or before the store's last date"):
        append(pd.concat([old, frame[frame["date"] > dates[650]]]), store, tmp_path / "old.csv")
    # A day the symbol did not trade, inside its stored tail: filling it in would rewrite history.
    untraded = frame[(frame["date"] == dates[606]) & (frame["symbol"] == "STEADY")].assign(symbol=symbol)
    with pytest.raises(PanelValidationError, match="not one of its stored bars"):
        append(untraded, store, tmp_path / "gap.csv")


def test_a_schema_mismatch_is_refused(tmp_path, ray_session):
    frame = panel()
    dates = sorted(frame["date"].unique())
    store = tmp_path / "store"
    build(frame[frame["date"] <= dates[650]], store)
    later = frame[frame["date"] > dates[650]].drop(columns=["volume"])
    with pytest.raises(PanelValidationError, match="schema mismatch: the store was built from close, high, low"):
        append(later, store, tmp_path / "new.csv")


KILLED_APPEND = """
import os, signal, sys, time
import rayfolio.data.append as append
from rayfolio.cluster.runtime import init_local_ray
from rayfolio.data.sources import file_source

def stop_before_commit(store, manifest):  # every new file is written; the manifest switch is next
    open(sys.argv[3], "w").close()
    time.sleep(600)

append._replace_manifest = stop_before_commit
init_local_ray(num_cpus=2)
append.append_to_store(sys.argv[1], file_source(sys.argv[2]))
"""


def test_a_killed_append_leaves_the_old_store(tmp_path, ray_session):
    frame = panel()
    dates = sorted(frame["date"].unique())
    store = tmp_path / "store"
    build(frame[frame["date"] <= dates[650]], store)
    files_before = {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    rows_before = FeatureStore(store).to_pandas()
    new = write_csv(frame[frame["date"] > dates[650]], tmp_path / "new.csv")
    ready = tmp_path / "ready"
    env = {**os.environ, "RAY_ADDRESS": ""}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_APPEND), str(store), str(new), str(ready)],
                             env=env, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, "the append ended before its commit"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    leftovers = {p.relative_to(store) for p in store.rglob("*") if p.is_file()} - files_before.keys()
    assert leftovers, "the killed append had written its files"
    survivor = FeatureStore(store)
    survivor.verify()
    pd.testing.assert_frame_equal(survivor.to_pandas(), rows_before)
    # The next append clears what the killed one left and lands whole.
    summary = append(frame[frame["date"] > dates[650]], store, tmp_path / "retry.csv")
    assert summary.version == 2
    listed = {*FeatureStore(store).checksums(), "manifest.json", ".append.lock"}
    assert {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()} == listed
