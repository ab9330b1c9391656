"""The forecasters' significance tables: every Rank IC with its HAC test, paired tests against the
baselines, the sign per year, and "beats" only on a one-sided p-value below 0.05."""

from __future__ import annotations

import numpy as np
import pytest

from rayfolio.data.features import FEATURES
from rayfolio.data.pipeline import build_features_local
from rayfolio.data.sources import SyntheticSource
from rayfolio.data.synthetic import SyntheticPanelConfig
from rayfolio.training.metrics import daily_rank_ic
from rayfolio.training.panel import Panel
from rayfolio.training.report import baseline_verdict, significance_table, yearly_table
from rayfolio.training.significance import newey_west_mean, paired_difference


@pytest.fixture(scope="module")
def scored():
    frame = build_features_local(SyntheticSource(SyntheticPanelConfig(n_assets=30, n_days=900, seed=5)), (5, 20))
    panel = Panel.from_frame(frame, tuple(f.name for f in FEATURES if f.name in frame.columns), (5, 20))
    t = np.arange(300, 800)
    rng = np.random.default_rng(0)
    labels = np.nan_to_num(panel.labels[t].astype(np.float64))
    noise = rng.standard_normal(labels.shape)
    return panel, {
        # Knows the future a little: a clear, significant Rank IC.
        "oracle": {"test": (t, labels / labels.std() + 3.0 * noise)},
        "coin": {"test": (t, rng.standard_normal(labels.shape))},
        "momentum_12_1": {"test": (t, rng.standard_normal(labels.shape))},
        "ridge": {"test": (t, rng.standard_normal(labels.shape))},
    }


def test_every_rank_ic_carries_its_newey_west_test_and_paired_tests(scored):
    panel, by_model = scored
    table = significance_table(panel, by_model).set_index(["model", "horizon"])
    for h, horizon in enumerate(panel.horizons):
        t, s = by_model["oracle"]["test"]
        ic = daily_rank_ic(s[..., h], panel.labels[t][..., h])
        expected = newey_west_mean(ic, lag=horizon - 1)
        row = table.loc[("oracle", horizon)]
        assert row["rank_ic"] == pytest.approx(np.nanmean(ic))
        assert row["t (NW)"] == pytest.approx(expected.t)
        assert row["p (IC > 0)"] == pytest.approx(expected.p_greater)
        ridge = daily_rank_ic(by_model["ridge"]["test"][1][..., h], panel.labels[t][..., h])
        assert row["p (> ridge)"] == pytest.approx(paired_difference(ic, ridge, horizon - 1).p_greater)
        assert row["vs 0"] == "beats" and row["vs ridge"] == "beats" and row["vs momentum_12_1"] == "beats"
    assert (table.xs("coin", level="model")["vs ridge"] != "beats").all()
    assert np.isnan(table.loc[("ridge", 5), "p (> ridge)"])  # not tested against itself


def test_beats_is_said_only_on_significance(scored):
    panel, by_model = scored
    table = significance_table(panel, by_model)
    assert "oracle (h=5)" in baseline_verdict(table, ("oracle", "coin"))
    assert "No network beats" in baseline_verdict(table, ("coin",))


def test_yearly_table_means_and_counts(scored):
    panel, by_model = scored
    years = yearly_table(panel, by_model, 20)
    t, s = by_model["oracle"]["test"]
    ic = daily_rank_ic(s[..., 1], panel.labels[t][..., 1])
    year = panel.dates[t].astype("datetime64[Y]").astype(int) + 1970
    first = int(year[0])
    assert float(years.loc[first, "oracle"]) == pytest.approx(np.nanmean(ic[year == first]), abs=5e-4)
    positive = sum(float(v) > 0 for v in years.drop(index="years > 0")["oracle"])
    assert years.loc["years > 0", "oracle"] == f"{positive} of {len(years) - 1}"
