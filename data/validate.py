"""Refusing a bad price panel before Ray starts.

A local panel that fits in memory is read and checked here, in this process,
with the same code the Ray Data read tasks and the per-symbol step run
(``schema.normalize_table`` through ``read_unit``, then
``schema.check_symbol_rows``): a 40-row file with one bad price is refused in
about a second instead of after Ray has started. Large and remote inputs are
left to the Ray Data path, which validates them in parallel while it reads.
Nothing here imports Ray.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from rayfolio.data.schema import ROW, SECTOR, SOURCE, check_symbol_rows
from rayfolio.data.sources import FileSource, PanelSource, panel_columns

# Estimated decompressed size (FileSource.estimated_bytes) up to which a local
# panel is checked in this process: a few hundred MB of arrays at most.
IN_PROCESS_LIMIT_BYTES = 256 << 20


def checked_in_process(source: PanelSource, max_bytes: int = IN_PROCESS_LIMIT_BYTES) -> bool:
    """True for local files small enough to read here; synthetic panels are valid by construction."""
    return (
        isinstance(source, FileSource)
        and isinstance(source.filesystem, pafs.LocalFileSystem)
        and source.estimated_bytes() <= max_bytes
    )


def validate_before_ray(source: PanelSource, max_bytes: int = IN_PROCESS_LIMIT_BYTES) -> None:
    """Raise ``PanelValidationError`` for the first broken rule of a small local
    panel; do nothing for sources the Ray Data path validates (see ``checked_in_process``)."""
    if not checked_in_process(source, max_bytes):
        return
    source.preflight()
    columns = panel_columns(source)
    table = pa.concat_tables(source.read_unit(unit).select(columns) for unit in source.units)
    keys = ["date", "symbol", SOURCE, ROW, *([SECTOR] if SECTOR in columns else [])]
    cols = {name: table.column(name).to_numpy() for name in keys}
    # Each symbol's rows together, in file order, as the Ray path's groupby hands them over.
    order = np.argsort(cols["symbol"], kind="stable")
    symbols = cols["symbol"][order]
    starts = np.flatnonzero(np.concatenate(([True], symbols[1:] != symbols[:-1])))  # a table has rows
    for a, b in itertools.pairwise([*starts.tolist(), len(order)]):
        idx = order[a:b]
        check_symbol_rows({name: values[idx] for name, values in cols.items()}, source.location)
