"""A one-day append against a full rebuild of the same feature store, in the same run.

Writes a synthetic ``--assets`` x ``--days`` panel as Parquet files (symbol groups), then times
(a) the full build of the whole panel (``prepare_feature_store``: Ray Data, every row) and (b)
appending the last day's bars (one small file, as a daily vendor file arrives) to a store built
up to the day before (``append_to_store``: Ray Data over the new bars, each symbol continued from
its state). Checks the appended store's last day equals the full build's, and prints the ratio
(target: the append costs <= 5% of the rebuild).

    python bench/append.py [--assets 500] [--days 5000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data_pipeline import write_panel


def last_day(panel: Path, out: Path) -> dt.date:
    """Copy the panel's last date into its own file (the day's new bars); return that date."""
    tables = [pq.read_table(p) for p in sorted(panel.glob("*.parquet"))]
    day = max(pc.max(t.column("date")).as_py() for t in tables)
    new = [t.filter(pc.equal(t.column("date"), pa.scalar(day, pa.date32()))) for t in tables]
    pq.write_table(pa.concat_tables(new), out)
    return day


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--days", type=int, default=5000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()

    import ray

    from rayfolio.data.append import append_to_store
    from rayfolio.data.sources import file_source, within
    from rayfolio.data.store import FeatureStore, prepare_feature_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = write_panel(root / "panel", args.assets, args.days, args.files, seed=0, layout="by-symbol")
        day = last_day(root / "panel", root / "new-day.parquet")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        horizons = (5, 20, 60)

        # The store up to the day before (not timed), then warm Ray Data up on it.
        prepare_feature_store(within(file_source(str(root / "panel")), end=day - dt.timedelta(days=1)),
                              root / "store", horizons)  # fmt: skip

        t0 = time.perf_counter()
        prepare_feature_store(file_source(str(root / "panel")), root / "full", horizons)
        rebuild = time.perf_counter() - t0

        t0 = time.perf_counter()
        summary = append_to_store(root / "store", file_source(str(root / "new-day.parquet")))
        append = time.perf_counter() - t0

        # What any Ray Data job costs here, whatever its size: a one-row read and map.
        t0 = time.perf_counter()
        ray.data.range(1).map_batches(lambda batch: batch).materialize()
        fixed = time.perf_counter() - t0

        appended = FeatureStore(root / "store").to_pandas(start=day)
        full = FeatureStore(root / "full").to_pandas(start=day)
        features = list(FeatureStore(root / "full").feature_names)
        worst = float(np.nanmax(np.abs(appended[features].to_numpy() - full[features].to_numpy())))
        ray.shutdown()

    print(f"panel: {args.assets} assets x {args.days} days = {rows:,} rows; {args.cpus} CPUs")
    print(f"full rebuild:   {rebuild:7.2f} s")
    print(f"one-day append: {append:7.2f} s ({summary.rows} new rows, {summary.patched_labels} labels completed)")
    print(f"a one-row Ray Data job: {fixed:7.2f} s (the floor of any job on Ray Data here)")
    print(f"append / rebuild = {append / rebuild:.3f} (target <= 0.05); last day's features agree to {worst:.1e}")


if __name__ == "__main__":
    main()
