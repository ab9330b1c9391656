"""The forecast explanations, stored per date next to the forecasts so that every replica and every
restart reuses them: a date's explanation depends only on the date, the forecaster versions and the
method's settings (explain/expected_gradients.py ``Method``), never on who asks.

Layout: ``<root>/<key digest>/<YYYY-MM-DD>.parquet``, one file per date holding every horizon; the
root defaults to ``<run dir>/explanations`` (the run dir is the feature store's parent). The digest is
of ``models_key(versions)`` and ``Method.key()``: a new model version, sample count or background
reads another directory, so it never sees the old numbers (``key.json`` in each directory says what
it holds, for people). Rows (long): ``date, symbol, horizon, expected_return, base_value, group,
contribution``, in (horizon, symbol, group) order.

Writes are atomic: a date is written to a hidden temporary file in the same directory, then renamed
over its name. Replicas computing the same date at once each rename a complete file with the same
numbers (the computation is deterministic); a reader only ever lists and opens final names, so a
half-written file is never read. A replica keeps an index of the dates present (refreshed from the
directory listing on a miss) and the explanations it has read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from rayfolio.explain.attributions import Attribution
from rayfolio.training.forecast_log import models_key

logger = logging.getLogger(__name__)

COLUMNS = ("date", "symbol", "horizon", "expected_return", "base_value", "group", "contribution")
DATE_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.parquet$")
CACHED_DATES = 256  # explanations a replica keeps decoded (a date's rows are ~20 KB on disk)


def default_root(feature_store: str | os.PathLike) -> Path:
    """``<run dir>/explanations``: the run dir is the feature store's parent."""
    return Path(feature_store).resolve().parent / "explanations"


def explanation_rows(date: str, explained: dict[int, Attribution]) -> pd.DataFrame:
    """Long rows of one date's explanations ({horizon: Attribution})."""
    frames = []
    for horizon, a in explained.items():
        n, g = a.contributions.shape
        frames.append(pd.DataFrame({
            "symbol": np.repeat(np.asarray(a.symbols, dtype=object), g),
            "horizon": np.full(n * g, horizon, dtype=np.int64),
            "expected_return": np.repeat(np.asarray(a.values, dtype=np.float64), g),
            "base_value": np.repeat(np.asarray(a.base_values, dtype=np.float64), g),
            "group": np.tile(np.asarray(a.groups, dtype=object), n),
            "contribution": a.contributions.astype(np.float64).reshape(-1),
        }))  # fmt: skip
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "date", date)
    return frame[list(COLUMNS)]


def attributions_of(rows: pd.DataFrame) -> dict[int, Attribution]:
    """The inverse of ``explanation_rows``: {horizon: Attribution}."""
    out = {}
    for horizon, frame in rows.groupby("horizon", sort=False):
        symbols, groups = tuple(pd.unique(frame["symbol"])), tuple(pd.unique(frame["group"]))
        g = len(groups)
        if len(frame) != len(symbols) * g:
            raise ValueError(f"horizon {horizon}: {len(frame)} rows for {len(symbols)} symbols x {g} groups")
        out[int(horizon)] = Attribution(symbols, frame["expected_return"].to_numpy()[::g],
                                        frame["base_value"].to_numpy()[::g], groups,
                                        frame["contribution"].to_numpy().reshape(len(symbols), g))  # fmt: skip
    return out


class ExplanationStore:
    """The stored explanations of one set of forecaster ``versions`` under one ``method`` key."""

    def __init__(self, root: str | os.PathLike, versions: dict[str, str], method: str) -> None:
        self.root = Path(root)
        self.models, self.method = models_key(versions), method
        digest = hashlib.sha256(f"{self.models}|{method}".encode()).hexdigest()[:16]
        self.path = self.root / digest
        self._index: set[str] = set()
        self._cache: OrderedDict[str, dict[int, Attribution]] = OrderedDict()
        self._lock = threading.Lock()  # the index and the cache: a lookup holds it for microseconds

    def refresh(self) -> set[str]:
        """The dates on disk (final names only: a temporary file is never listed as a date)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            names = []
        dates = {m.group(1) for m in map(DATE_FILE.match, names) if m}
        with self._lock:
            self._index = dates
        return dates

    def dates(self) -> set[str]:
        return set(self.refresh())

    def get(self, date: str) -> dict[int, Attribution] | None:
        """Every horizon's explanation of ``date`` (ISO), or None when not stored."""
        with self._lock:
            if date in self._cache:
                self._cache.move_to_end(date)
                return self._cache[date]
            known = date in self._index
        if not known and date not in self.refresh():
            return None
        try:
            explained = attributions_of(pd.read_parquet(self.path / f"{date}.parquet"))
        except (OSError, ValueError) as err:  # damaged from outside: recomputed and rewritten by the caller
            logger.warning("explanation store %s: unreadable %s.parquet (%s), recomputing", self.path, date, err)
            return None
        with self._lock:
            self._cache[date] = explained
            while len(self._cache) > CACHED_DATES:
                self._cache.popitem(last=False)
        return explained

    def put(self, date: str, explained: dict[int, Attribution] | pd.DataFrame) -> Path:
        """Store ``date``'s explanations (or their rows) atomically; returns the file."""
        rows = explained if isinstance(explained, pd.DataFrame) else explanation_rows(date, explained)
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_key()
        final = self.path / f"{date}.parquet"
        tmp = self.path / f".{date}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            rows.to_parquet(tmp, index=False)
            os.replace(tmp, final)  # atomic on POSIX: readers see the old file, or the whole new one
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._index.add(date)
        return final

    def _write_key(self) -> None:
        key = self.path / "key.json"
        if key.is_file():
            return
        tmp = self.path / f".key.{uuid.uuid4().hex[:12]}.tmp"
        tmp.write_text(json.dumps({"models": self.models, "method": self.method}, indent=2) + "\n")
        os.replace(tmp, key)
