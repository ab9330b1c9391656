"""Point in time: change the future, the past must not move."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfolio.data.features import FEATURES, compute_symbol_features, label_name
from rayfolio.data.sources import file_source
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig, generate_assets
from tests.data.panels import small_panel, write_csv

HORIZONS = (5, 20, 60)
N_DAYS = 420


def perturb_after(cols: dict[str, np.ndarray], cut: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scale every bar after index ``cut`` by a random positive factor (OHLC
    together, so bars stay valid) and redraw volumes."""
    out = {k: v.copy() for k, v in cols.items()}
    n = len(out["close"]) - cut - 1
    factor = np.exp(rng.normal(0.0, 0.05, n).cumsum())
    for k in ("open", "high", "low", "close"):
        out[k][cut + 1 :] *= factor
    out["volume"][cut + 1 :] = rng.integers(1, 10**6, n).astype(float)
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.integers(61, N_DAYS - 2))
def test_changing_prices_after_d_moves_no_feature_at_or_before_d(seed, cut):
    table = generate_assets(SyntheticPanelConfig(n_assets=1, n_days=N_DAYS, seed=seed % 97), np.array([0]))
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    changed = perturb_after(cols, cut, np.random.default_rng(seed))
    before = compute_symbol_features(cols, FEATURES, HORIZONS)
    after = compute_symbol_features(changed, FEATURES, HORIZONS)
    for feature in FEATURES:
        np.testing.assert_array_equal(after[feature.name][: cut + 1], before[feature.name][: cut + 1], feature.name)
    for h in HORIZONS:
        name = label_name(h)
        np.testing.assert_array_equal(after[name][: cut + 1 - h], before[name][: cut + 1 - h], name)
        # The boundary is tight: the first label whose window reaches past D moved.
        assert after[name][cut + 1 - h] != before[name][cut + 1 - h]
    assert after["ret_1"][cut + 1] != before["ret_1"][cut + 1]


def test_store_past_does_not_move_when_the_future_changes(tmp_path, ray_session):
    """The same property end to end: files in, Ray Data pipeline, store out."""
    panel = small_panel(n_assets=3, n_days=300, seed=9)
    cut_date = sorted(panel["date"].unique())[200]
    changed = panel.copy()
    future = changed["date"] > cut_date
    for column in ("open", "high", "low", "close"):
        changed.loc[future, column] *= 1.7
    for name, frame in (("a", panel), ("b", changed)):
        prepare_feature_store(
            file_source(str(write_csv(frame, tmp_path / name / "p.csv"))), tmp_path / f"s{name}", HORIZONS
        )
    a, b = FeatureStore(tmp_path / "sa").to_pandas(), FeatureStore(tmp_path / "sb").to_pandas()
    past = a["date"] <= pd.Timestamp(cut_date)
    features = [f.name for f in FEATURES]
    pd.testing.assert_frame_equal(a.loc[past, features], b.loc[past, features], check_exact=True)
    assert not a.loc[~past, "ret_1"].equals(b.loc[~past, "ret_1"])


def test_lagged_label_is_entered_at_the_next_close():
    cols = {"date": np.arange(6), "symbol": np.array(["X"] * 6), "close": np.array([1.0, 2.0, 4.0, 12.0, 24.0, 48.0])}
    lag0 = compute_symbol_features(cols, (), (1, 2))
    lag1 = compute_symbol_features(cols, (), (1, 2), label_lag=1)
    np.testing.assert_allclose(lag1[label_name(1)], np.log([2.0, 3.0, 2.0, 2.0, np.nan, np.nan]))
    np.testing.assert_allclose(lag1[label_name(2)], np.log([6.0, 6.0, 4.0, np.nan, np.nan, np.nan]))
    for h in (1, 2):  # the same returns, one row earlier
        np.testing.assert_array_equal(lag1[label_name(h)][:-1], lag0[label_name(h)][1:])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), cut=st.integers(61, N_DAYS - 2))
def test_lagged_labels_use_only_t_plus_1_to_t_plus_1_plus_h(seed, cut):
    table = generate_assets(SyntheticPanelConfig(n_assets=1, n_days=N_DAYS, seed=seed % 97), np.array([0]))
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    changed = perturb_after(cols, cut, np.random.default_rng(seed))
    before = compute_symbol_features(cols, (), HORIZONS, label_lag=1)
    after = compute_symbol_features(changed, (), HORIZONS, label_lag=1)
    for h in HORIZONS:
        name = label_name(h)
        # The label at t reads close[t+1] and close[t+1+h]: unchanged while t+1+h <= D ...
        np.testing.assert_array_equal(after[name][: cut - h], before[name][: cut - h], name)
        # ... and the first one reaching past D moved.
        assert after[name][cut - h] != before[name][cut - h]
    # The label never reads close[t] itself: changing only the price at D moves the label at D-1, not at D.
    only_d = {k: v.copy() for k, v in cols.items()}
    only_d["close"][cut] *= 1.1
    moved = compute_symbol_features(only_d, (), (5,), label_lag=1)[label_name(5)]
    base = before[label_name(5)]
    assert moved[cut - 1] != base[cut - 1]
    np.testing.assert_array_equal(moved[cut], base[cut])
