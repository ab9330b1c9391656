"""The price-panel contract: column names, the validation error, and the checks.

A panel is long (one row per date and symbol: ``date, symbol, close`` required,
``open, high, low, volume`` optional) or wide (``date`` plus one close-price
column per symbol). ``normalize_table`` turns one file's table into the long
form and refuses anything that breaks the contract with a
``PanelValidationError`` naming the file, the line or row, the (date, symbol),
the column and the rule. Checks are vectorised over whole columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

PRICE_COLUMNS = ("open", "high", "low", "close")
VOLUME = "volume"
VALUE_COLUMNS = (*PRICE_COLUMNS, VOLUME)
SECTOR = "sector"  # optional text column of a long panel, constant per symbol (graph edges)
ROW = "_row"  # provenance: CSV line number or Parquet row number, kept until features are built
SOURCE = "_source"  # provenance: index of the input file in the source's file list


@dataclass(frozen=True)
class Location:
    """Where a bad value sits: ``file`` plus a CSV line or a Parquet row."""

    file: str
    line: int | None = None  # CSV: 1 = header
    row: int | None = None  # Parquet: 1 = first data row

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file}, line {self.line}"
        if self.row is not None:
            return f"{self.file}, row {self.row}"
        return self.file


class PanelValidationError(ValueError):
    """Input refused: names the file, the line/row, (date, symbol), column and rule."""

    def __init__(
        self,
        location: Location,
        rule: str,
        *,
        column: str | None = None,
        date: Any = None,
        symbol: str | None = None,
        value: Any = None,
    ) -> None:
        self.location, self.rule, self.column = location, rule, column
        self.date, self.symbol, self.value = date, symbol, value
        where = str(location)
        if date is not None or symbol is not None:
            where += f" ({date if date is not None else '?'}, {symbol if symbol is not None else '?'})"
        if column is not None:
            where += f", column '{column}'"
        got = f" (got {value!r})" if value is not None else ""
        super().__init__(f"{where}: {rule}{got}")

    def __reduce__(self):  # keeps the fields when Ray ships the error back from a worker
        kwargs = {"column": self.column, "date": self.date, "symbol": self.symbol, "value": self.value}
        return (_rebuild_error, (self.location, self.rule, kwargs))


def _rebuild_error(location: Location, rule: str, kwargs: dict[str, Any]) -> PanelValidationError:
    return PanelValidationError(location, rule, **kwargs)


class _Rows:
    """Maps a row index of one file's table to its Location."""

    def __init__(self, file: str, is_csv: bool, row_numbers: np.ndarray | None = None) -> None:
        self.file, self.is_csv = file, is_csv
        self.row_numbers = row_numbers  # after melting, original row index per long row

    def number(self, i: int) -> int:
        original = int(self.row_numbers[i]) if self.row_numbers is not None else i
        return original + 2 if self.is_csv else original + 1

    def at(self, i: int) -> Location:
        n = self.number(i)
        return Location(self.file, line=n) if self.is_csv else Location(self.file, row=n)


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_OFFSET_GROUP = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")


def has_utc_offset(text: str) -> bool:
    return bool(_OFFSET.search(text.strip()))


def parse_dates(values: pa.ChunkedArray | pa.Array, rows: _Rows, column: str) -> np.ndarray:
    """Dates of one column as ``datetime64[D]``.

    Strings and timestamps are accepted. A timestamp that carries a time zone
    or UTC offset keeps its local calendar date (a daily bar is dated where it
    traded). Refused: empty or unparseable values, and a column that mixes
    zone-aware and naive values or offsets more than a DST hour apart.
    """
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if arr.null_count:
        i = int(np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False))[0])
        raise PanelValidationError(rows.at(i), "date is missing", column=column)
    kind = arr.type
    if pa.types.is_date(kind):
        return arr.cast(pa.date32()).to_numpy(zero_copy_only=False).astype("datetime64[D]")
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:  # local wall-clock date in the column's zone
            arr = pc.local_timestamp(arr)
        return arr.to_numpy(zero_copy_only=False).astype("datetime64[D]")
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise PanelValidationError(rows.at(0), f"dates must be text or dates, not {kind}", column=column)
    text = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object).str.strip()
    has_offset = text.str.contains(_OFFSET).to_numpy()
    if has_offset.any() and not has_offset.all():
        i = int(np.flatnonzero(has_offset != has_offset[0])[0])
        raise PanelValidationError(
            rows.at(i),
            "mixed time zones: some dates carry a UTC offset and others do not",
            column=column,
            value=text.iloc[i],
        )
    if has_offset.all():
        offsets = text.str.extract(_OFFSET_GROUP, expand=False)
        minutes = offsets.map(_offset_minutes).to_numpy()
        if minutes.max() - minutes.min() > 60:
            i = int(np.flatnonzero(minutes != minutes[0])[0])
            raise PanelValidationError(
                rows.at(i),
                f"mixed time zones: offsets {offsets.iloc[0]} and {offsets.iloc[i]} in one column",
                column=column,
                value=text.iloc[i],
            )
        # Keep the wall-clock date as written: drop the offset before parsing.
        text = text.str.replace(_OFFSET, "", regex=True)
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if not str(text.iloc[i]).strip():  # CSV reads an empty cell as ""
            raise PanelValidationError(rows.at(i), "date is missing", column=column)
        raise PanelValidationError(rows.at(i), "unparseable date", column=column, value=text.iloc[i])
    return parsed.to_numpy().astype("datetime64[D]")


def _offset_minutes(offset: str) -> int:
    if offset == "Z":
        return 0
    sign = -1 if offset[0] == "-" else 1
    digits = offset[1:].replace(":", "")
    return sign * (int(digits[:2]) * 60 + int(digits[2:]))


def _numeric(values: pa.ChunkedArray, rows: _Rows, column: str) -> np.ndarray:
    """A value column as float64 (missing cells -> NaN); text that is not a number is refused."""
    arr = values.combine_chunks()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        as_text = pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object)
        as_num = pd.to_numeric(as_text, errors="coerce")
        bad = (as_num.isna() & as_text.notna() & (as_text.str.strip() != "")).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise PanelValidationError(rows.at(i), "value is not a number", column=column, value=as_text.iloc[i])
        out = as_num.to_numpy(dtype=np.float64)
    elif pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type):
        out = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    else:
        raise PanelValidationError(rows.at(0), f"values must be numbers, not {arr.type}", column=column)
    return out


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


# Tickers as data vendors write them (BRK.B, ^GSPC, EURUSD=X, BTC-USD): never a leading
# = + - @, which spreadsheets run as a formula when a report or export is opened.
SYMBOL = re.compile(r"[A-Za-z0-9^][A-Za-z0-9._^/=:-]{0,31}")


SYMBOL_RULE = "symbol must be 1-32 letters, digits or . _ ^ / = : - and start with a letter, digit or ^"


def check_symbols(symbols: np.ndarray, rows: _Rows) -> None:
    """Refuse symbols that are not plain tickers (formula injection, control characters, odd lengths)."""
    unique, first = np.unique(symbols, return_index=True)
    for symbol, i in zip(unique, first, strict=True):
        if not symbol.strip():  # CSV reads an empty cell as ""
            raise PanelValidationError(rows.at(int(i)), "symbol is missing", column="symbol")
        if not SYMBOL.fullmatch(symbol):
            raise PanelValidationError(rows.at(int(i)), SYMBOL_RULE, column="symbol", value=str(symbol))


def check_values(cols: dict[str, np.ndarray], rows: _Rows, *, wide: bool = False) -> None:
    """Refuse non-finite or non-positive prices, inverted bars, negative volume.

    ``cols`` holds ``date``, ``symbol`` and the value columns present, as
    float64 arrays aligned row for row. In a ``wide`` file the close column
    of a row is the column headed by its symbol, and messages name it so.
    """

    def fail(i: int, column: str, rule: str) -> None:
        raise PanelValidationError(
            rows.at(i),
            rule,
            column=str(cols["symbol"][i]) if wide and column == "close" else column,
            date=str(cols["date"][i]),
            symbol=str(cols["symbol"][i]),
            value=float(cols[column][i]),
        )

    for column in VALUE_COLUMNS:
        if column not in cols:
            continue
        x = cols[column]
        if (i := _first(np.isnan(x))) is not None:
            fail(i, column, "value is missing or NaN")
        if (i := _first(np.isinf(x))) is not None:
            fail(i, column, "value is infinite")
        if column != VOLUME and (i := _first(x <= 0)) is not None:
            fail(i, column, "price must be > 0")
    if VOLUME in cols and (i := _first(cols[VOLUME] < 0)) is not None:
        fail(i, VOLUME, "volume must be >= 0")
    if "high" in cols and "low" in cols:
        high, low = cols["high"], cols["low"]
        if (i := _first(high < low)) is not None:
            fail(i, "high", f"high must be >= low ({cols['low'][i]!r})")
        # Adjusted data is rounded: allow one part in 1e9 before calling a bar broken.
        slack = 1e-9 * high
        for column in ("open", "close"):
            if column in cols:
                x = cols[column]
                if (i := _first((x < low - slack) | (x > high + slack))) is not None:
                    fail(i, column, f"{column} must lie within [low, high] = [{float(low[i])!r}, {float(high[i])!r}]")


def first_duplicate(dates: np.ndarray, symbols: np.ndarray) -> tuple[int, int] | None:
    """Indices (first, second) of the first repeated (date, symbol) pair, if any."""
    if len(dates) < 2:
        return None
    order = np.lexsort((dates, symbols))
    same = (dates[order][1:] == dates[order][:-1]) & (symbols[order][1:] == symbols[order][:-1])
    if not same.any():
        return None
    k = int(np.flatnonzero(same)[0])
    a, b = sorted((int(order[k]), int(order[k + 1])))
    return a, b


def check_symbol_rows(rows: dict[str, np.ndarray], locate: Callable[[int, int], Location]) -> dict[str, np.ndarray]:
    """One symbol's rows, gathered from every file, sorted by date; refuses a
    (date, symbol) that repeats (also across files) and a sector that changes.

    ``rows`` holds ``date``, ``symbol``, the provenance columns ``_source`` and
    ``_row`` (and ``sector`` when present) as arrays of shape (T,), in any order:
    files can be unsorted or split by date, so they are sorted here rather than
    refused. ``locate(source_index, row)`` names a row's file and line.
    """
    order = np.argsort(rows["date"], kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    dates = rows["date"]

    def at(i: int) -> Location:
        return locate(int(rows[SOURCE][i]), int(rows[ROW][i]))

    repeats = np.flatnonzero(dates[1:] == dates[:-1])
    if len(repeats):
        a, b = int(repeats[0]), int(repeats[0]) + 1
        raise PanelValidationError(
            at(b),
            f"duplicate (date, symbol): also at {at(a)}",
            column="date",
            date=str(dates[b]),
            symbol=str(rows["symbol"][b]),
        )
    if SECTOR in rows and len(changed := np.flatnonzero(rows[SECTOR][1:] != rows[SECTOR][:-1])):
        i = int(changed[0]) + 1
        raise PanelValidationError(
            at(i),
            f"sector changes within a symbol (was {rows[SECTOR][i - 1]!r})",
            column=SECTOR,
            date=str(dates[i]),
            symbol=str(rows["symbol"][i]),
            value=str(rows[SECTOR][i]),
        )
    return rows


def normalize_table(table: pa.Table, file: str, *, is_csv: bool, source_index: int = 0) -> pa.Table:
    """One file's table, long or wide, validated and in long form.

    Returns a table with ``date`` (date32), ``symbol`` (string), the value
    columns present (float64), and the provenance columns ``_source`` and
    ``_row``; rows keep the file's order.
    """
    headers = [str(n).strip() for n in table.column_names]
    names = [h.lower() for h in headers]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PanelValidationError(Location(file), "column appears twice (names are case-insensitive)", column=dup)
    table = table.rename_columns(names)
    if table.num_rows == 0:
        raise PanelValidationError(Location(file), "file is empty: no data rows")
    if "date" not in names:
        raise PanelValidationError(Location(file), "missing required column", column="date")
    rows = _Rows(file, is_csv)
    dates = parse_dates(table.column("date"), rows, "date")

    if "symbol" in names:  # long format
        if "close" not in names:
            raise PanelValidationError(Location(file), "missing required column", column="close")
        symbol_col = table.column("symbol").combine_chunks()
        if symbol_col.null_count:
            i = int(np.flatnonzero(pc.is_null(symbol_col).to_numpy(zero_copy_only=False))[0])
            raise PanelValidationError(rows.at(i), "symbol is missing", column="symbol")
        symbols = symbol_col.cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
        check_symbols(symbols, rows)
        cols: dict[str, np.ndarray] = {"date": dates, "symbol": symbols}
        for column in VALUE_COLUMNS:
            if column in names:
                cols[column] = _numeric(table.column(column), rows, column)
        check_values(cols, rows)
        if SECTOR in names:
            sector_col = table.column(SECTOR).combine_chunks().cast(pa.string())
            # CSV reads an empty text cell as "", not null: both are missing.
            sectors = np.asarray(
                pc.utf8_trim_whitespace(sector_col.fill_null("")).to_numpy(zero_copy_only=False), dtype=str
            )
            if (i := _first(sectors == "")) is not None:
                raise PanelValidationError(rows.at(i), "sector is missing", column=SECTOR, symbol=str(symbols[i]))
            cols[SECTOR] = sectors
        row_index = np.arange(table.num_rows)
    else:  # wide: every other column is one symbol's close
        symbol_names = [n for n in names if n != "date"]
        original = [h for h in headers if h.lower() != "date"]
        if not symbol_names:
            raise PanelValidationError(
                Location(file),
                "missing required column (long format needs 'symbol'; wide needs symbol columns)",
                column="symbol",
            )
        for header in original:  # a wide file's symbols are its column headers
            if not SYMBOL.fullmatch(header):
                raise PanelValidationError(Location(file), SYMBOL_RULE, column=header)
        closes = [_numeric(table.column(n), rows, orig) for n, orig in zip(symbol_names, original, strict=True)]
        # (T, S) -> long rows; an empty cell means the symbol did not trade that day.
        grid = np.column_stack(closes)
        present = ~np.isnan(grid)
        row_index, sym_index = np.nonzero(present)
        symbols = np.asarray(original, dtype=str)[sym_index]
        cols = {"date": dates[row_index], "symbol": symbols, "close": grid[row_index, sym_index]}
        long_rows = _Rows(file, is_csv, row_numbers=row_index)
        check_values(cols, long_rows, wide=True)
        rows = long_rows
        if len(row_index) == 0:
            raise PanelValidationError(Location(file), "file has no prices: every cell is empty")

    if (dup := first_duplicate(cols["date"], cols["symbol"])) is not None:
        a, b = dup
        raise PanelValidationError(
            rows.at(b),
            f"duplicate (date, symbol): also at line {rows.number(a)}"
            if is_csv
            else f"duplicate (date, symbol): also at row {rows.number(a)}",
            column="date",
            date=str(cols["date"][b]),
            symbol=str(cols["symbol"][b]),
        )
    arrays = {
        "date": pa.array(cols["date"], type=pa.date32()),
        "symbol": pa.array(cols["symbol"], type=pa.string()),
        **({SECTOR: pa.array(cols[SECTOR], type=pa.string())} if SECTOR in cols else {}),
        **{c: pa.array(cols[c], type=pa.float64()) for c in VALUE_COLUMNS if c in cols},
        SOURCE: pa.array(np.full(len(cols["date"]), source_index, dtype=np.int32)),
        ROW: pa.array(np.asarray(row_index, dtype=np.int64)),
    }
    return pa.table(arrays)


def describe_location(file: str, is_csv: bool, row_index: int) -> Location:
    """Location of a row index (0-based, as stored in ``_row``) of ``file``."""
    return _Rows(file, is_csv).at(row_index)
