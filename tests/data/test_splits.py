"""Purged date splits: label windows never reach into the next split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig

QUICKSTART = SplitConfig(
    train_end=dt.date(2014, 12, 31),
    validation_start=dt.date(2015, 1, 1),
    validation_end=dt.date(2016, 12, 31),
    test_start=dt.date(2017, 1, 1),
)
CALENDAR = pd.bdate_range("2012-01-02", "2018-12-31").to_numpy().astype("datetime64[D]")


@pytest.mark.parametrize("purge", [0, 5, 60])
def test_purge_removes_exactly_the_overlapping_label_windows(purge):
    parts = PurgedDateSplitter(QUICKSTART, purge).split_dates(CALENDAR)
    index = {d: i for i, d in enumerate(CALENDAR)}
    for current, following in (("train", "validation"), ("validation", "test")):
        last, first_next = index[parts[current][-1]], index[parts[following][0]]
        # The last kept label (prices up to last + purge) ends just before the next split.
        assert last + purge == first_next - 1 if purge else last == first_next - 1
    # Nothing else is dropped and nothing overlaps.
    assert len(np.intersect1d(parts["train"], parts["validation"])) == 0
    all_train = CALENDAR[CALENDAR <= np.datetime64("2014-12-31")]
    assert len(all_train) - len(parts["train"]) == purge
    assert parts["test"][0] == np.datetime64("2017-01-02") and parts["test"][-1] == CALENDAR[-1]


def test_purge_counts_trading_days_of_the_panel_not_calendar_days():
    sparse = CALENDAR[::2]  # a panel that trades every other business day
    parts = PurgedDateSplitter(QUICKSTART, 5).split_dates(sparse)
    last, first_val = np.searchsorted(sparse, parts["train"][-1]), np.searchsorted(sparse, parts["validation"][0])
    assert first_val - last == 6


def test_split_frames_by_rows():
    frame = pd.DataFrame({"date": np.repeat(CALENDAR, 2), "symbol": ["A", "B"] * len(CALENDAR)})
    parts = PurgedDateSplitter(QUICKSTART, 20).split(frame)
    assert sum(len(p) for p in parts.values()) == len(frame) - 2 * 2 * 20
    assert parts["validation"]["date"].min() >= pd.Timestamp("2015-01-01")


def test_config_refuses_unordered_and_unknown_fields():
    with pytest.raises(ValidationError, match=r"train_end .* < validation_start"):
        SplitConfig(train_end="2016-01-01", validation_start="2015-01-01", validation_end="2016-12-31",
                    test_start="2017-01-01")  # fmt: skip
    with pytest.raises(ValidationError, match=r"validation_end .* < test_start"):
        SplitConfig(train_end="2014-12-31", validation_start="2015-01-01", validation_end="2017-01-01",
                    test_start="2017-01-01")  # fmt: skip
    with pytest.raises(ValidationError, match="Extra inputs"):
        SplitConfig(train_end="2014-12-31", validation_start="2015-01-01", validation_end="2016-12-31",
                    test_start="2017-01-01", tets_end="2018-01-01")  # fmt: skip


def test_empty_split_is_an_error():
    short = CALENDAR[CALENDAR < np.datetime64("2015-02-01")]
    with pytest.raises(ValueError, match="split 'test' holds no dates"):
        PurgedDateSplitter(QUICKSTART, 60).split_dates(short)
