"""Where price panels come from: files (CSV/Parquet, local or any pyarrow
filesystem URI), the embedded S&P 500 sample, and the synthetic generator.

A source is a list of read units (a file, or a slice of synthetic assets);
``read_unit`` turns one unit into a validated long-format table (see
``schema.normalize_table``). Nothing here imports Ray: ``pipeline.PanelDatasource``
hands the units to Ray Data as read tasks, so files are read and validated in
parallel, streaming, and ``validate.validate_before_ray`` reads a small local
panel in this process.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rayfolio.data.schema import (
    ROW,
    SECTOR,
    SOURCE,
    VALUE_COLUMNS,
    Location,
    PanelValidationError,
    describe_location,
    has_utc_offset,
    normalize_table,
)
from rayfolio.data.synthetic import (
    PlantedSignalError,
    SyntheticPanelConfig,
    generate_assets,
    market_state,
    planted_coefficient,
    symbol_name,
)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass(frozen=True)
class DateWindow:
    """Only the rows dated ``start <= date <= end`` of a source (either bound open when None):
    a store built up to a date, the bars after it appended later."""

    start: dt.date | None = None
    end: dt.date | None = None

    def keep(self, table: pa.Table) -> pa.Table:
        if self.start is None and self.end is None:
            return table
        dates = table.column("date")
        mask = pc.greater_equal(dates, pa.scalar(self.start, pa.date32())) if self.start else None
        if self.end is not None:
            upper = pc.less_equal(dates, pa.scalar(self.end, pa.date32()))
            mask = upper if mask is None else pc.and_(mask, upper)
        return table.filter(mask)

    def __contains__(self, day: dt.date) -> bool:
        return (self.start is None or day >= self.start) and (self.end is None or day <= self.end)

    def __str__(self) -> str:
        if self.start is None and self.end is None:
            return ""
        return f"dates {self.start or '...'}..{self.end or '...'}"

    @classmethod
    def parse(cls, text: str, error: type[Exception] = ValueError, *, open_ends: bool = True) -> DateWindow:
        """``START:END`` (ISO dates, inclusive; with ``open_ends`` either may be left empty), as a
        command's ``--window``; ``error`` (one line naming the flag) when it is not one."""
        start, sep, end = text.partition(":")
        try:
            if not sep or not (open_ends or (start.strip() and end.strip())):
                raise ValueError
            window = cls(*(dt.date.fromisoformat(s.strip()) if s.strip() else None for s in (start, end)))
        except ValueError:
            raise error(f"--window {text!r}: expected START:END as ISO dates, e.g. 2022-10-03:2022-12-28") from None
        if window.start and window.end and window.start > window.end:
            raise error(f"--window {text!r}: the start {window.start} is after the end {window.end}")
        return window


def within(source: PanelSource, start: dt.date | None = None, end: dt.date | None = None) -> PanelSource:
    """``source`` restricted to the dates ``start..end`` (every row is still validated)."""
    if start is not None and end is not None and start > end:
        raise PanelValidationError(Location(source.name), f"date window {start}..{end} is empty (start after end)")
    return replace(source, window=DateWindow(start, end))


def _windowed_hash(content: str, window: DateWindow) -> str:
    return content if not str(window) else hashlib.sha256(f"{content} {window}".encode()).hexdigest()


@dataclass(frozen=True)
class PanelFile:
    path: str  # path inside the filesystem
    display: str  # what error messages call it (the path or URI the user gave)
    is_csv: bool
    size: int


@dataclass(frozen=True)
class FileSource:
    """A CSV/Parquet file or a directory of them, on a pyarrow filesystem."""

    files: tuple[PanelFile, ...]
    filesystem: pafs.FileSystem = field(repr=False)
    name: str
    window: DateWindow = DateWindow()

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(range(len(self.files)))

    def read_unit(self, unit: int) -> pa.Table:
        f = self.files[unit]
        table = _read_csv(self.filesystem, f) if f.is_csv else _read_parquet(self.filesystem, f)
        return self.window.keep(normalize_table(table, f.display, is_csv=f.is_csv, source_index=unit))

    def unit_symbols(self, unit: int) -> frozenset[str]:
        """The symbols one file holds, reading only its symbol column (or header)."""
        f = self.files[unit]
        names = _header_names(self.filesystem, f)
        lowered = [n.strip().lower() for n in names]
        if "symbol" not in lowered:  # wide: the header is the symbol list
            return frozenset(n.strip() for n, low in zip(names, lowered, strict=True) if low != "date")
        column = names[lowered.index("symbol")]
        try:
            if f.is_csv:
                with self.filesystem.open_input_stream(f.path, compression="detect") as stream:
                    options = pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()})
                    table = pacsv.read_csv(stream, convert_options=options)
            else:
                table = pq.read_table(f.path, filesystem=self.filesystem, columns=[column])
        except (pa.ArrowInvalid, OSError):
            return frozenset()  # unreadable: read_unit names the problem
        return frozenset(pc.unique(table.column(column).cast(pa.string())).drop_null().to_pylist())

    def preflight(self) -> None:
        """Refuse files that disagree on time zones (some dated with a UTC
        offset, some without), reading only each file's first date."""
        with ThreadPoolExecutor(8) as pool:
            zones = list(pool.map(lambda f: _date_zone(self.filesystem, f), self.files))
        aware = [f for f, z in zip(self.files, zones, strict=True) if z == "aware"]
        naive = [f for f, z in zip(self.files, zones, strict=True) if z == "naive"]
        if aware and naive:
            first = describe_location(naive[0].display, naive[0].is_csv, 0)
            raise PanelValidationError(
                describe_location(aware[0].display, aware[0].is_csv, 0),
                f"mixed time zones: dates here carry a UTC offset or zone, dates in {first} do not",
                column="date",
            )

    @cached_property
    def has_sector(self) -> bool:
        """Every file is long format with a sector column."""
        return all({"symbol", SECTOR} <= _header(self.filesystem, f) for f in self.files)

    @cached_property
    def value_columns(self) -> frozenset[str]:
        """Value columns every file has (a wide file has only ``close``).

        Features are built from these, so every symbol gets the same columns
        even when only some files carry volume or high/low.
        """
        common = set(VALUE_COLUMNS)
        for f in self.files:
            names = _header(self.filesystem, f)
            common &= names if "symbol" in names else {"close"}
        return frozenset(common)

    def location(self, unit: int, row: int) -> Location:
        f = self.files[unit]
        return describe_location(f.display, f.is_csv, row)

    def content_hash(self) -> str:
        """sha256 over every file's name (relative to the source) and bytes (and the date window)."""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f.display.encode() + b"\0")
            with self.filesystem.open_input_stream(f.path) as stream:
                while chunk := stream.read(1 << 22):
                    digest.update(chunk)
        return _windowed_hash(digest.hexdigest(), self.window)

    def estimated_bytes(self) -> int:
        # Decompressed, typed columns run a few times the file size.
        return sum(f.size for f in self.files) * 4


@dataclass(frozen=True)
class SyntheticSource:
    """Synthetic panel, generated ``assets_per_unit`` assets per read task."""

    config: SyntheticPanelConfig
    assets_per_unit: int = 25
    name: str = "synthetic"
    window: DateWindow = DateWindow()

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(range(0, self.config.n_assets, self.assets_per_unit))

    def preflight(self) -> None:
        """Generated data is valid by construction; a planted signal's strength must be reachable.

        Calibrating it here refuses an unreachable one before Ray starts (in one line).
        """
        try:
            planted_coefficient(self.config)
        except PlantedSignalError as err:
            raise PanelValidationError(Location(self._display()), str(err)) from None

    @property
    def value_columns(self) -> frozenset[str]:
        return frozenset(VALUE_COLUMNS)

    has_sector = True

    def unit_symbols(self, unit: int) -> frozenset[str]:
        stop = min(unit + self.assets_per_unit, self.config.n_assets)
        return frozenset(symbol_name(i, self.config) for i in range(unit, stop))

    def read_unit(self, unit: int) -> pa.Table:
        assets = np.arange(unit, min(unit + self.assets_per_unit, self.config.n_assets))
        table = generate_assets(self.config, assets, market_state(self.config))
        return self.window.keep(normalize_table(table, self._display(), is_csv=False, source_index=unit))

    def location(self, unit: int, row: int) -> Location:
        return describe_location(self._display(), False, row)

    def _display(self) -> str:
        c = self.config
        planted = f", planted_rank_ic={c.planted_rank_ic}" if c.planted_rank_ic else ""
        return f"synthetic(n_assets={c.n_assets}, n_days={c.n_days}, seed={c.seed}{planted})"

    def content_hash(self) -> str:
        return _windowed_hash(self.config.content_hash(), self.window)

    def estimated_bytes(self) -> int:
        return self.config.n_assets * self.config.n_days * 9 * 8


PanelSource = FileSource | SyntheticSource


def make_source(spec: str, synthetic: SyntheticPanelConfig | None = None) -> PanelSource:
    """``'sp500'`` (embedded), ``'synthetic'``, or a file/directory path or URI."""
    if spec == "sp500":
        return sp500_source()
    if spec == "synthetic":
        return SyntheticSource(synthetic or SyntheticPanelConfig())
    return file_source(spec)


def sp500_source() -> FileSource:
    """The embedded sample: skfolio's 20 S&P 500 stocks, 1990-2022, wide CSV (no download)."""
    path = resources.files("skfolio.datasets.data") / "sp500_dataset.csv.gz"
    return file_source(str(path), name="sp500")


def file_source(path: str, filesystem: pafs.FileSystem | None = None, name: str | None = None) -> FileSource:
    """A file or directory of CSV/Parquet files; ``path`` may be a URI (``s3://...``)."""
    if filesystem is None:
        if "://" in path:
            filesystem, inner = pafs.FileSystem.from_uri(path)
        else:
            filesystem, inner = pafs.LocalFileSystem(), os.path.abspath(path)
    else:
        inner = path
    info = filesystem.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise PanelValidationError(Location(path), "no such file or directory")
    if info.type == pafs.FileType.Directory:
        found = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
        infos = sorted(
            (i for i in found if i.type == pafs.FileType.File and _is_panel_file(i.path)), key=lambda i: i.path
        )
        if not infos:
            raise PanelValidationError(
                Location(path),
                f"directory holds no CSV or Parquet files ({', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})",
            )
        root = inner.rstrip("/")
        files = tuple(
            PanelFile(i.path, path.rstrip("/") + i.path[len(root) :], _is_csv(i.path), i.size or 0) for i in infos
        )
    else:
        if not _is_panel_file(inner):
            raise PanelValidationError(
                Location(path),
                f"not a CSV or Parquet file (expected one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})",
            )
        files = (PanelFile(inner, path, _is_csv(inner), info.size or 0),)
    return FileSource(files, filesystem, name or path)


def _is_panel_file(path: str) -> bool:
    base = os.path.basename(path).lower()
    if base.startswith((".", "_")):  # _SUCCESS, .crc and friends
        return False
    return base.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES)


def _is_csv(path: str) -> bool:
    return os.path.basename(path).lower().endswith(CSV_SUFFIXES)


def _header_names(fs: pafs.FileSystem, f: PanelFile) -> list[str]:
    """Column names of one file as written, without reading its data."""
    if f.is_csv:
        with fs.open_input_stream(f.path, compression="detect") as stream:
            head = stream.read(65536).decode("utf-8", "replace")
        first = head.splitlines()[0] if head.strip() else ""
        return next(csv.reader(io.StringIO(first)), [])
    try:
        return pq.read_schema(f.path, filesystem=fs).names
    except (pa.ArrowInvalid, OSError):
        return []  # unreadable: read_unit names the problem


def _date_zone(fs: pafs.FileSystem, f: PanelFile) -> str | None:
    """'aware' when the file's first date carries a zone or UTC offset, 'naive'
    when not, None when unknown (no date column, unreadable: read_unit says why)."""
    if not f.is_csv:
        try:
            schema = pq.read_schema(f.path, filesystem=fs)
        except (pa.ArrowInvalid, OSError):
            return None
        field = next((x for x in schema if x.name.strip().lower() == "date"), None)
        if field is None or not pa.types.is_timestamp(field.type):
            return None if field is None or not pa.types.is_date(field.type) else "naive"
        return "aware" if field.type.tz else "naive"
    with fs.open_input_stream(f.path, compression="detect") as stream:
        head = stream.read(65536).decode("utf-8", "replace").splitlines()
    rows = list(csv.reader(head[:2]))
    if len(rows) < 2:
        return None
    names = [n.strip().lower() for n in rows[0]]
    if "date" not in names or len(rows[1]) <= names.index("date"):
        return None
    return "aware" if has_utc_offset(rows[1][names.index("date")]) else "naive"


def _header(fs: pafs.FileSystem, f: PanelFile) -> set[str]:
    """Lower-cased column names of one file."""
    return {n.strip().lower() for n in _header_names(fs, f)}


def _read_csv(fs: pafs.FileSystem, f: PanelFile) -> pa.Table:
    with fs.open_input_stream(f.path, compression="detect") as stream:
        raw = stream.read()
    if not raw.strip():
        raise PanelValidationError(Location(f.display), "file is empty")
    header = next(csv.reader(io.StringIO(raw[:65536].decode("utf-8", "replace").splitlines()[0])))
    # Dates are read as text: the parser here keeps each row's local date and
    # notices mixed time zones, which arrow's own timestamp inference would hide.
    as_text = {name: pa.string() for name in header if name.strip().lower() in ("date", "symbol")}
    try:
        return pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(column_types=as_text))
    except pa.ArrowInvalid:
        # Type inference saw numbers first and text later: read everything as text
        # so the validator can name the exact line and value.
        all_text = {name: pa.string() for name in header}
        try:
            return pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(column_types=all_text))
        except pa.ArrowInvalid as err:
            raise PanelValidationError(Location(f.display), f"not a readable CSV file: {err}") from None


def _read_parquet(fs: pafs.FileSystem, f: PanelFile) -> pa.Table:
    if f.size == 0:
        raise PanelValidationError(Location(f.display), "file is empty")
    try:
        return pq.read_table(f.path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as err:
        raise PanelValidationError(Location(f.display), f"not a readable Parquet file: {err}") from None


def panel_columns(source: PanelSource) -> list[str]:
    """The columns every unit of ``source`` yields, in a fixed order: one schema for all of them."""
    sector = [SECTOR] if source.has_sector else []
    return ["date", "symbol", *sector, *(c for c in VALUE_COLUMNS if c in source.value_columns), SOURCE, ROW]


def symbols_partition_units(source: PanelSource, max_workers: int = 8) -> bool:
    """True when no symbol appears in two read units.

    Then each unit holds whole symbols and features can be computed right where
    the unit is read, with no shuffle. Reads only symbol columns and headers.
    """
    with ThreadPoolExecutor(max_workers) as pool:  # arrow readers release the GIL
        per_unit = list(pool.map(source.unit_symbols, source.units))
    return sum(len(s) for s in per_unit) == len(frozenset().union(*per_unit))
