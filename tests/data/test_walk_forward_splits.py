"""Walk-forward refits: no refit sees a label past its own training end, and the out-of-sample
segments tile the period from the first refit to the end."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfolio.data.splits import SplitConfig, walk_forward

CALENDAR = pd.bdate_range("1995-01-02", "2012-12-31").to_numpy().astype("datetime64[D]")
FIRST = SplitConfig(
    train_end=dt.date(2002, 12, 31),
    validation_start=dt.date(2003, 1, 1),
    validation_end=dt.date(2004, 12, 31),
    test_start=dt.date(2005, 1, 1),
)


def test_the_quickstart_schedule_refits_in_2017_and_2020():
    calendar = pd.bdate_range("1990-01-02", "2022-12-28")
    quickstart = SplitConfig(train_end=dt.date(2014, 12, 31), validation_start=dt.date(2015, 1, 1),
                             validation_end=dt.date(2016, 12, 31), test_start=dt.date(2017, 1, 1))  # fmt: skip
    refits = walk_forward(quickstart, 36, 60, calendar)
    assert [r.start for r in refits] == [dt.date(2017, 1, 1), dt.date(2020, 1, 1)]
    assert refits[0].splitter.config.model_dump() == {**quickstart.model_dump(), "test_end": dt.date(2019, 12, 31)}
    second = refits[1].splitter.config
    # The same two-year validation window, just before the refit; training up to the day before.
    assert (second.validation_start, second.validation_end) == (dt.date(2018, 1, 1), dt.date(2019, 12, 31))
    assert second.train_end == dt.date(2017, 12, 31) and second.test_end is None


def test_no_schedule_is_one_refit_on_the_splits_as_given():
    (only,) = walk_forward(FIRST, None, 20, CALENDAR)
    assert only.splitter.config == FIRST


@settings(max_examples=40, deadline=None)
@given(
    every=st.sampled_from([3, 6, 12, 24, 36]),
    purge=st.integers(0, 60),
    validation_months=st.integers(3, 24),
    gap_days=st.integers(1, 10),
)
def test_no_refit_sees_a_label_past_its_own_training_end(every, purge, validation_months, gap_days):
    test_start = pd.Timestamp("2005-01-01")
    validation_start = test_start - pd.DateOffset(months=validation_months)
    first = SplitConfig(
        train_end=(validation_start - pd.Timedelta(days=gap_days)).date(),
        validation_start=validation_start.date(),
        validation_end=(test_start - pd.Timedelta(days=1)).date(),
        test_start=test_start.date(),
    )
    refits = walk_forward(first, every, purge, CALENDAR)
    index = {d: i for i, d in enumerate(CALENDAR)}
    covered = []
    for refit in refits:
        parts = refit.splitter.split_dates(CALENDAR)
        last_train, first_val = index[parts["train"][-1]], index[parts["validation"][0]]
        last_val, first_test = index[parts["validation"][-1]], index[parts["test"][0]]
        # A label at t uses prices up to t + purge: training labels end before validation starts,
        # validation labels before the refit's out-of-sample segment starts.
        assert last_train + purge < first_val
        assert last_val + purge < first_test
        # Training expands: every refit starts at the panel's first date.
        assert parts["train"][0] == CALENDAR[0]
        covered.append(parts["test"])
    stitched = np.concatenate(covered)
    # The segments tile the period: in order, no gap, no overlap, from the first refit to the end.
    expected = CALENDAR[CALENDAR >= np.datetime64("2005-01-01")]
    np.testing.assert_array_equal(stitched, expected)
    starts = [r.start for r in refits]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_every_stitched_date_is_out_of_sample_for_the_refit_that_forecasts_it():
    refits = walk_forward(FIRST, 12, 60, CALENDAR)
    assert len(refits) == 8  # 2005 .. 2012
    for refit in refits:
        parts = refit.splitter.split_dates(CALENDAR)
        # Whatever the refit fitted or chose on ends before the first date it forecasts.
        seen = np.concatenate([parts["train"], parts["validation"]])
        assert seen.max() < parts["test"].min()
        assert refit.splitter.config.train_end < refit.start
