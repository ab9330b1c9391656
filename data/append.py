"""Appending new bars to a feature store without rebuilding its history.

On Ray Data like the full build: the new bars are read and validated by read
tasks, gathered per symbol, and ``SymbolAppend`` continues each symbol from its
stored state (data/state.py): the tail's prices give the windowed features and
the labels, the running series continue the EMAs, Wilder's averages and OBV. Its
output per symbol is the tail plus the new rows, flagged by what each row is for:

- ``_new``: the new dates' features and labels -> one new Parquet part;
- ``_patch``: the last max(h) + lag old rows, whose labels the new prices complete
  -> a labels-only patch the store's readers apply over the old parts;
- ``_resent``: stored rows whose bars came again, unchanged -> counted, nothing written;
and the next state is the stored one with the new rows' prices and running values added,
cut to the last L rows of each symbol.

Nothing the store reads is touched until the end: the new files get names no
manifest lists, and the new manifest (version + 1, the append recorded) replaces
the old one in a single rename. A killed append leaves the old store; the files it
left are removed by the next append. One append at a time per store (a file lock).
"""

from __future__ import annotations

import copy
import datetime as dt
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rayfolio.data.features import FeatureDef, available_features, symbol_rows
from rayfolio.data.schema import ROW, SECTOR, SOURCE, Location, PanelValidationError, check_symbol_rows
from rayfolio.data.sources import PanelSource, panel_columns
from rayfolio.data.state import SymbolState, read_state, state_rows, tail_rows, write_table_atomic
from rayfolio.data.store import (
    FORMAT_VERSION,
    MANIFEST,
    STATE_DIR,
    FeatureStore,
    FeatureStoreError,
    sha256_file,
    write_state,
)

FLAGS = ("_new", "_patch", "_resent")
# Two prices that differ by less than this (relative) are the same bar re-sent (CSV round trips).
SAME_PRICE_RTOL = 1e-10


@dataclass(frozen=True)
class AppendSummary:
    path: str
    version: int
    rows: int  # new rows
    symbols: int  # symbols with new rows
    new_symbols: tuple[str, ...]
    first: str | None
    last: str | None
    patched_labels: int  # old rows whose labels were recomputed
    skipped_bars: int  # bars already in the store, identical, ignored
    seconds: float

    def lines(self) -> list[str]:
        if not self.rows:
            return [f"feature store: {self.path} (version {self.version}): nothing to append, "
                    f"every bar is already in the store ({self.skipped_bars} skipped)"]  # fmt: skip
        new = f", {len(self.new_symbols)} new ({', '.join(self.new_symbols[:10])})" if self.new_symbols else ""
        return [
            f"feature store: {self.path} -> version {self.version}",
            f"  appended: {self.rows:,} rows, {self.first} .. {self.last}, {self.symbols} symbols{new}",
            f"  labels completed on {self.patched_labels:,} old rows; {self.skipped_bars} re-sent bars skipped",
            f"  took {self.seconds:.1f} s",
        ]


class SymbolAppend:
    """Ray Data step: one symbol's new bars + its stored state -> its tail and new rows, flagged.

    ``dict[str, ndarray]`` of validated rows (any order) -> dict of arrays, the store's columns
    plus the value columns, the running series and the ``FLAGS``.
    """

    def __init__(
        self,
        source: PanelSource,
        features: tuple[FeatureDef, ...],
        horizons: tuple[int, ...],
        label_lag: int,
        states: dict[str, SymbolState] | ray.ObjectRef,
    ) -> None:
        self.source, self.features, self.horizons, self.label_lag = source, features, horizons, label_lag
        self._states = states  # an ObjectRef on Ray: every read task fetches it from the object store
        self.tail = tail_rows(features, horizons, label_lag)
        self.value_columns = tuple(sorted(source.value_columns))

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = check_symbol_rows(rows, self.source.location)
        state = self.states.get(str(rows["symbol"][0]))
        new, resent = self._unseen(rows, state)
        keep = [c for c in ("date", "symbol", *self.value_columns, SECTOR) if c in rows]
        if state is None:
            prices = {c: new[c] for c in keep}
        else:
            prices = {c: np.concatenate([state.prices[c], new[c]]) for c in keep}
        old = 0 if state is None else state.rows
        out, running = symbol_rows(
            prices, self.features, self.horizons, self.label_lag, None if state is None else state.resume(self.tail)
        )
        index = np.arange(len(prices["date"]))
        reach = max(self.horizons) + self.label_lag  # old labels the new prices can complete
        flags = {
            "_new": index >= old,
            "_patch": (index < old) & (index >= old - reach) & (len(index) > old),
            "_resent": (index < old) & np.isin(prices["date"], resent),  # counted, then dropped
        }
        columns = {**out, **state_rows(prices, running, len(index), self.value_columns), **flags}
        wanted = flags["_new"] | flags["_patch"] | flags["_resent"]
        return {name: values[wanted] for name, values in columns.items()}

    @property
    def states(self) -> dict[str, SymbolState]:
        if isinstance(self._states, ray.ObjectRef):
            self._states = ray.get(self._states)
        return self._states

    def _unseen(
        self, rows: dict[str, np.ndarray], state: SymbolState | None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The bars after the symbol's last stored date, and the dates of the re-sent ones (a bar on
        a stored date with the same prices); anything else on or before that date is refused."""
        dates = rows["date"]
        if state is None:
            return rows, dates[:0]
        old = np.flatnonzero(dates <= state.last_date)
        if not len(old):
            return rows, dates[:0]
        stored = state.prices["date"]
        at = np.minimum(np.searchsorted(stored, dates[old]), len(stored) - 1)
        unknown = np.flatnonzero(stored[at] != dates[old])
        if len(unknown):
            i = old[unknown[0]]
            self._refuse(rows, i, "date", f"dated on or before the store's last date for this symbol "
                         f"({state.last_date}) and not one of its stored bars: appends add later dates only "
                         "(rebuild the store to insert history)")  # fmt: skip
        for column in self.value_columns:
            given, kept = rows[column][old].astype(np.float64), state.prices[column][at].astype(np.float64)
            same = np.isclose(given, kept, rtol=SAME_PRICE_RTOL, atol=0.0) | (np.isnan(given) & np.isnan(kept))
            if not same.all():
                j = int(np.flatnonzero(~same)[0])
                rule = (f"restatement: {column} {float(given[j])!r} differs from the store's {float(kept[j])!r} "
                        "for a bar it already holds; rebuild the store (rayfolio data prepare)")  # fmt: skip
                self._refuse(rows, old[j], column, rule)
        fresh = dates > state.last_date
        return {name: values[fresh] for name, values in rows.items()}, dates[old]

    def _refuse(self, rows: dict[str, np.ndarray], i: int, column: str, rule: str) -> None:
        where = self.source.location(int(rows[SOURCE][i]), int(rows[ROW][i]))
        raise PanelValidationError(where, rule, column=column, date=str(rows["date"][i]),
                                   symbol=str(rows["symbol"][i]))  # fmt: skip


def append_to_store(store_path: str | os.PathLike, source: PanelSource) -> AppendSummary:
    """Append ``source``'s bars after each symbol's last stored date to the store at ``store_path``.

    Refused (``PanelValidationError``, nothing written): a schema that differs from the
    store's, a bar on or before a symbol's last date that is not one of its stored bars, a
    stored bar re-sent with a different price (a restatement). Bars re-sent unchanged are
    skipped, so running the same append twice changes nothing.
    """
    from rayfolio.data.pipeline import symbol_dataset

    started = time.perf_counter()
    store = FeatureStore(store_path)
    with _append_lock(store.path):
        _remove_leftovers(store)
        features = _check_schema(store, source)
        states = _read_states(store)
        # Put once: carried in the step, the states would be pickled into every read task's function.
        step = SymbolAppend(source, features, store.horizons, store.label_lag, ray.put(states))
        source.preflight()
        try:
            outputs = ray.get(symbol_dataset(source, step).to_arrow_refs())
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, PanelValidationError):  # the refusal itself, naming file, row and rule
                raise err.cause from None
            raise
        tables = [t for t in outputs if t.num_rows]
        table = pa.concat_tables(tables, promote_options="default") if tables else None
        skipped = sum(pc.sum(t.column("_resent")).as_py() or 0 for t in tables)
        if table is None or not pc.any(table.column("_new")).as_py():
            return AppendSummary(str(store.path), store.version, 0, 0, (), None, None, 0, skipped,
                                 time.perf_counter() - started)  # fmt: skip
        summary = _commit(store, table, states, source, skipped)
    return replace(summary, seconds=time.perf_counter() - started)


def _check_schema(store: FeatureStore, source: PanelSource) -> tuple[FeatureDef, ...]:
    """The store's feature definitions, once the new bars' columns are known to match the store's."""
    if store.state_path is None:
        raise FeatureStoreError(f"{store.path}: built before appends existed (no state); rebuild it with "
                                "rayfolio data prepare")  # fmt: skip
    stored = set(store.manifest["source"]["value_columns"])
    given = set(source.value_columns)
    has_sector = SECTOR in store.manifest["columns"]
    if given != stored or (SECTOR in panel_columns(source)) != has_sector:
        want = ", ".join(sorted(stored)) + (" and sector" if has_sector else "")
        got = ", ".join(sorted(given)) + (" and sector" if SECTOR in panel_columns(source) else "")
        rule = (f"schema mismatch: the store was built from {want}, these bars have {got}; append bars with "
                "the store's columns or rebuild it")  # fmt: skip
        raise PanelValidationError(Location(source.name), rule)
    features = available_features(frozenset(stored), store.feature_set)
    if tuple(f.name for f in features) != store.feature_names:
        raise FeatureStoreError(
            f"{store.path}: its features differ from this rayfolio's {store.feature_set} catalogue "
            "(built by another version); rebuild it with rayfolio data prepare"
        )
    return features


def _read_states(store: FeatureStore) -> dict[str, SymbolState]:
    path = store.state_path
    if not path.is_file() or sha256_file(path) != store.manifest["state"]["sha256"]:
        raise FeatureStoreError(f"{path}: missing or its sha256 does not match {MANIFEST}; rebuild the store")
    return read_state(path)


def _commit(
    store: FeatureStore, table: pa.Table, states: dict[str, SymbolState], source: PanelSource, skipped: int
) -> AppendSummary:
    """Write the new part, the label patch and the next state under fresh names, then switch the
    manifest to them in one rename."""
    version = store.version + 1
    tag = f"v{version:04d}-{uuid.uuid4().hex[:8]}"
    order = [("symbol", "ascending"), ("date", "ascending")]
    columns = store.manifest["columns"]
    schema = pq.read_schema(store.path / next(iter(sorted(store.manifest["files"]))))
    new = table.filter(table.column("_new")).select(columns).sort_by(order).cast(schema)
    part = f"append-{tag}.parquet"
    write_table_atomic(new, store.path / part)
    patch = table.filter(table.column("_patch")).select(["date", "symbol", *store.label_names]).sort_by(order)
    patch_file = f"labels-{tag}.parquet"
    write_table_atomic(patch, store.path / patch_file)
    stored = pq.read_table(store.state_path)
    added_rows = table.filter(table.column("_new")).select(stored.column_names).cast(stored.schema)
    touched = set(pc.unique(added_rows.column("symbol")).to_pylist())
    tail = store.manifest["state"]["tail_rows"]
    state = write_state(last_rows(pa.concat_tables([stored, added_rows]).sort_by(order), tail), store.path, version)

    dates = new.column("date")
    first, last = str(pc.min(dates).as_py()), str(pc.max(dates).as_py())
    added = sorted(touched - states.keys())
    manifest = copy.deepcopy(store.manifest)
    old_state = manifest.get("state", {}).get("file")
    manifest |= {
        "format_version": FORMAT_VERSION,
        "version": version,
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": manifest["rows"] + new.num_rows,
        "symbols": manifest["symbols"] + len(added),
        "date_range": [min(manifest["date_range"][0], first), max(manifest["date_range"][1], last)],
        "state": {**state, "tail_rows": manifest["state"]["tail_rows"]},
    }
    manifest["files"][part] = sha256_file(store.path / part)
    manifest["label_patches"] = [*manifest.get("label_patches", []),
                                 {"file": patch_file, "sha256": sha256_file(store.path / patch_file),
                                  "version": version, "rows": patch.num_rows}]  # fmt: skip
    manifest["appends"] = [*manifest.get("appends", []), {
        "version": version,
        "created_at": manifest["updated_at"],
        "source": {"name": source.name, "content_sha256": source.content_hash(), "window": str(source.window) or None},
        "dates": [first, last],
        "rows": new.num_rows,
        "symbols": len(touched),
        "new_symbols": added,
        "skipped_bars": skipped,
        "part": part,
        "label_patch": patch_file,
    }]  # fmt: skip
    _replace_manifest(store.path, manifest)  # the commit: before it the old store, after it the new
    if old_state and old_state != state["file"]:
        (store.path / old_state).unlink(missing_ok=True)
    return AppendSummary(str(store.path), version, new.num_rows, len(touched), tuple(added), first, last,
                         patch.num_rows, skipped, 0.0)  # fmt: skip


def last_rows(table: pa.Table, n: int) -> pa.Table:
    """The last ``n`` rows of each symbol of a table sorted by (symbol, date)."""
    symbols = table.column("symbol").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate(([True], symbols[1:] != symbols[:-1])))
    ends = np.append(starts[1:], len(symbols))  # one past each symbol's last row
    to_end = np.repeat(ends, ends - starts) - np.arange(len(symbols))  # rows from here to the symbol's end
    return table.filter(pa.array(to_end <= n))


def _replace_manifest(store: Path, manifest: dict) -> None:
    tmp = store / f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, store / MANIFEST)


@contextmanager
def _append_lock(store: Path) -> Iterator[None]:
    with open(store / ".append.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FeatureStoreError(f"{store}: another append is running on this store") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_leftovers(store: FeatureStore) -> None:
    """Files an append killed before its commit left behind (no manifest lists them)."""
    listed = set(store.checksums())
    candidates = [*store.path.glob("append-*.parquet"), *store.path.glob("labels-*.parquet"),
                  *store.path.glob(f"{STATE_DIR}/*.parquet"), *store.path.glob(".*.tmp"),
                  *store.path.glob(f"{STATE_DIR}/.*.tmp")]  # fmt: skip
    for path in candidates:
        if path.relative_to(store.path).as_posix() not in listed:
            path.unlink(missing_ok=True)
