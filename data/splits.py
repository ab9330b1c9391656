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
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class WalkForwardConfig(BaseModel):
    """Expanding-window refits. ``splits`` is the first refit; every ``refit_every`` months after its
    test start another refit trains on everything up to its own purged validation window (as long as
    the first's, just before it) and forecasts until the next refit. None: one refit (the splits as given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refit_every: int | None = Field(None, ge=1, description="months between refits")
    parallel: int | None = Field(None, ge=1, description="refits at once; None: as many as the cluster holds")
    max_retries: int = Field(2, ge=0)  # a failed refit is run again, from its finished searches


@dataclass(frozen=True)
class Refit:
    """One walk-forward refit: its splits (train / purged validation / the out-of-sample segment it
    forecasts, ``test``) and the segment's bounds."""

    index: int
    splitter: PurgedDateSplitter

    @property
    def start(self) -> dt.date:
        return self.splitter.config.test_start

    @property
    def end(self) -> dt.date | None:
        return self.splitter.config.test_end


def walk_forward(config: SplitConfig, every: int | None, purge: int, dates) -> list[Refit]:
    """The refits of a walk-forward over ``dates`` (the panel's calendar), in time order.

    Refit k forecasts [test_start + k x every, test_start + (k+1) x every) (the last one to the panel's
    end, or ``config.test_end``); its validation window has the first refit's length and ends the day
    before; training ends the day before validation starts and starts at ``config.train_start``. The
    purge drops every training and validation label that would reach past its split, so no refit
    sees a price from its own out-of-sample segment while it is fitted or chosen.
    """
    calendar = np.unique(np.asarray(pd.to_datetime(np.asarray(dates)).values.astype("datetime64[D]")))
    last = config.test_end or pd.Timestamp(calendar[-1]).date()
    # The validation window spans the same calendar months and days before each refit as before the first.
    validation_length = relativedelta(config.test_start, config.validation_start)
    gap = pd.Timestamp(config.validation_start) - pd.Timestamp(config.train_end)
    starts = [pd.Timestamp(config.test_start)]
    while every is not None and (nxt := starts[-1] + pd.DateOffset(months=every)).date() <= last:
        starts.append(nxt)
    refits = []
    for k, start in enumerate(starts):
        end = (starts[k + 1] - pd.Timedelta(days=1)).date() if k + 1 < len(starts) else config.test_end
        validation_start = start - validation_length
        validation_end = start - pd.Timedelta(days=1)
        split = config.model_copy(
            update={
                "train_end": (validation_start - gap).date(),
                "validation_start": validation_start.date(),
                "validation_end": validation_end.date(),
                "test_start": start.date(),
                "test_end": end,
            }
        )
        splitter = PurgedDateSplitter(SplitConfig.model_validate(split.model_dump()), purge)
        segment = (calendar >= np.datetime64(start.date(), "D")) & (calendar <= np.datetime64(end or last, "D"))
        if segment.any():  # a refit whose segment holds no trading day forecasts nothing
            refits.append(Refit(len(refits), splitter))
    return refits
