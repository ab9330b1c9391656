"""A feature store's per-symbol state: what an append needs to continue each symbol.

For every symbol, its last ``L`` rows: the dates and prices (the windowed features'
and the labels' inputs) and, over the same rows, the running series of its recursive
indicators (EMA, Wilder's averages, OBV; see ``SymbolData.recursive``). ``L`` is one
more than the longest window or label reach of the store's features, so a new row's
windowed features need nothing older than the tail, and every old label that new
prices can complete lies inside it. A symbol with fewer rows keeps its whole history
and an append recomputes it from its first row.

On disk: one Parquet table, long (``symbol, date, <value columns>[, sector],
running:<name>...``), sorted by (symbol, date).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayfolio.data.features import FeatureDef, Resume

RUNNING = "running:"  # column prefix of a running series in the state table


def tail_rows(features: tuple[FeatureDef, ...], horizons: tuple[int, ...], label_lag: int) -> int:
    """L: rows kept per symbol. Each feature's warm-up is its window's reach back (the rows
    before t it reads); the labels of the last max(h) + lag old rows change when prices arrive."""
    return 1 + max(max((f.warmup for f in features), default=0), max(horizons) + label_lag)


@dataclass(frozen=True)
class SymbolState:
    """One symbol's stored tail: ``prices`` (``date``, ``symbol``, value columns and ``sector``
    when the store has one) and ``running`` series, each of shape (rows,)."""

    prices: Mapping[str, np.ndarray]
    running: Mapping[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(self.prices["date"])

    @property
    def last_date(self) -> np.datetime64:
        return self.prices["date"][-1]

    def resume(self, tail: int) -> Resume | None:
        """How to continue this symbol: from its running series when it holds a full tail,
        else None (its whole history is here: recompute it)."""
        return Resume(self.running) if self.rows >= tail else None


def state_rows(
    prices: Mapping[str, np.ndarray], running: Mapping[str, np.ndarray], tail: int, value_columns: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """The last ``tail`` rows of one symbol's prices and running series, as state table columns."""
    keep = slice(max(0, len(prices["date"]) - tail), None)
    out = {"symbol": prices["symbol"][keep], "date": prices["date"][keep]}
    for column in (*value_columns, "sector"):
        if column in prices:
            out[column] = prices[column][keep]
    for name, series in running.items():
        out[RUNNING + name] = np.asarray(series, dtype=np.float64)[keep]
    return out


def state_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    return pa.table({**columns, "date": pa.array(columns["date"], type=pa.date32())})


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write ``path`` whole or not at all (a temporary name, then a rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_state(path: Path) -> dict[str, SymbolState]:
    """Every symbol's state from a state table."""
    table = pq.read_table(path).sort_by([("symbol", "ascending"), ("date", "ascending")])
    symbols = table.column("symbol").to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.concatenate(([True], symbols[1:] != symbols[:-1], [True])))
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    states = {}
    for a, b in itertools.pairwise(bounds):
        prices = {k: v[a:b] for k, v in columns.items() if not k.startswith(RUNNING)}
        running = {k[len(RUNNING) :]: v[a:b] for k, v in columns.items() if k.startswith(RUNNING)}
        states[str(symbols[a])] = SymbolState(prices, running)
    return states
