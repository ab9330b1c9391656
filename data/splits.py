"""Train / validation / test by dates, with a purge gap of the label horizon.

A label at date t looks ``h`` trading days ahead, so the last ``h`` trading
days of a split carry labels that overlap the next split. The splitter drops
them (the purge): no training label sees a validation price, and no
validation label sees a test price. Gaps are counted on the panel's own
trading calendar (the sorted distinct dates), not in calendar days.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator

SPLITS = ("train", "validation", "test")
_KEYS = {"train": "splits.train_end", "validation": "splits.validation_start and validation_end",
         "test": "splits.test_start"}  # fmt: skip


class SplitError(ValueError):
    """Split dates that leave a split empty on this panel: a config mistake, named by its keys."""


class SplitConfig(BaseModel):
    """Split boundaries (inclusive dates). ``test_end`` None = to the last date."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_end: dt.date
    validation_start: dt.date
    validation_end: dt.date
    test_start: dt.date
    test_end: dt.date | None = None
    train_start: dt.date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        bounds = [
            ("train_end", self.train_end),
            ("validation_start", self.validation_start),
            ("validation_end", self.validation_end),
            ("test_start", self.test_start),
        ]
        if self.train_start is not None:
            bounds.insert(0, ("train_start", self.train_start))
        if self.test_end is not None:
            bounds.append(("test_end", self.test_end))
        for (a, da), (b, db) in itertools.pairwise(bounds):
            strict = (a, b) in (("train_end", "validation_start"), ("validation_end", "test_start"))
            if da > db or (strict and da == db):
                raise ValueError(f"splits must be in order: {a} ({da}) {'<' if strict else '<='} {b} ({db})")
        return self


@dataclass(frozen=True)
class PurgedDateSplitter:
    """Assigns each date to train, validation or test, purging ``purge`` trading
    days at the end of train and of validation.

    Parameters
    ----------
    config : SplitConfig
        The date boundaries.
    purge : int
        Trading days dropped before each boundary; the longest label horizon.
    """

    config: SplitConfig
    purge: int

    def __post_init__(self) -> None:
        if self.purge < 0:
            raise ValueError(f"purge must be >= 0 trading days, got {self.purge}")

    def split_dates(self, dates: np.ndarray | pd.Series | pd.DatetimeIndex) -> dict[str, np.ndarray]:
        """The sorted distinct dates of each split, as ``datetime64[D]`` arrays."""
        calendar = np.unique(np.asarray(pd.to_datetime(np.asarray(dates)).values.astype("datetime64[D]")))
        c = self.config

        def day(d: dt.date | None) -> np.datetime64 | None:
            return None if d is None else np.datetime64(d, "D")

        train = calendar <= day(c.train_end)
        if c.train_start is not None:
            train &= calendar >= day(c.train_start)
        validation = (calendar >= day(c.validation_start)) & (calendar <= day(c.validation_end))
        test = calendar >= day(c.test_start)
        if c.test_end is not None:
            test &= calendar <= day(c.test_end)
        train = self._purge_before(calendar, train, validation)
        validation = self._purge_before(calendar, validation, test)
        out = {"train": calendar[train], "validation": calendar[validation], "test": calendar[test]}
        for name, selected in out.items():
            if len(selected) == 0:
                raise SplitError(
                    f"split '{name}' holds no dates after a purge of {self.purge} trading days "
                    f"(panel covers {calendar[0]} .. {calendar[-1]}): check {_KEYS[name]}"
                )
        return out

    def _purge_before(self, calendar: np.ndarray, current: np.ndarray, following: np.ndarray) -> np.ndarray:
        """Drop the dates of ``current`` whose h-day label window reaches ``following``."""
        if self.purge == 0 or not following.any():
            return current
        first_next = int(np.flatnonzero(following)[0])
        # A label at index i uses prices i+1..i+purge: it must end before first_next.
        keep = np.arange(len(calendar)) + self.purge < first_next
        return current & keep

    def split(self, frame: pd.DataFrame, date_column: str = "date") -> dict[str, pd.DataFrame]:
        """Rows of ``frame`` per split (by its date column)."""
        dates = frame[date_column].to_numpy().astype("datetime64[D]")
        parts = self.split_dates(dates)
        return {name: frame[np.isin(dates, selected)] for name, selected in parts.items()}
