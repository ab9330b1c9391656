"""Feature pipeline throughput: Ray Data vs a single-process pandas version.

    python bench/data_pipeline.py --assets 1000 --days 5000

Writes a synthetic panel (long Parquet files, not timed), then in the same run
times (a) rayfolio's Ray Data pipeline on ``--cpus`` CPUs and (b) the pandas
implementation in ``bench/pandas_features.py``, each reading the same files
and writing Parquet. Each runs in its own process; peak memory is the peak
sum of PSS over that process and its children (Ray's raylet and workers
included; shared object-store pages counted once). Prints figures; passes or
fails nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def write_panel(directory: Path, assets: int, days: int, files: int, seed: int, layout: str) -> int:
    """Write the panel as ``files`` Parquet files, each holding a group of
    symbols (``by-symbol``) or a stretch of dates for every symbol (``by-date``,
    which makes the pipeline shuffle rows by symbol)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rayfolio.data.synthetic import SyntheticPanelConfig, generate_assets, market_state

    cfg = SyntheticPanelConfig(n_assets=assets, n_days=days, seed=seed)
    state = market_state(cfg)
    directory.mkdir(parents=True)
    chunks = np.array_split(np.arange(assets), files)
    if layout == "by-symbol":
        for k, chunk in enumerate(chunks):
            pq.write_table(generate_assets(cfg, chunk, state), directory / f"panel-{k:03d}.parquet")
    else:
        panel = pa.concat_tables(generate_assets(cfg, chunk, state) for chunk in chunks)
        for k, dates in enumerate(np.array_split(state.dates, files)):
            start, end = pa.scalar(dates[0].item()), pa.scalar(dates[-1].item())  # date32
            mask = pc.and_(pc.greater_equal(panel["date"], start), pc.less_equal(panel["date"], end))
            pq.write_table(panel.filter(mask), directory / f"panel-{k:03d}.parquet")
    return assets * days


def run_ray(panel: Path, out: Path, cpus: int) -> dict:
    import ray

    from rayfolio.data.sources import file_source
    from rayfolio.data.store import prepare_feature_store

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t1 = time.perf_counter()
    summary = prepare_feature_store(file_source(str(panel)), out, (5, 20, 60))
    t2 = time.perf_counter()
    return {"rows": summary.rows, "seconds": t2 - t1, "ray_init_seconds": t1 - t0}


def run_pandas(panel: Path, out: Path) -> dict:
    import pandas as pd

    sys.path.insert(0, str(HERE))
    from pandas_features import pandas_features

    t0 = time.perf_counter()
    frame = pd.read_parquet(panel)
    features = pandas_features(frame)
    features.to_parquet(out / "features.parquet")
    return {"rows": len(features), "seconds": time.perf_counter() - t0}


def measure(args: list[str]) -> dict:
    """Run one implementation in a child process, sampling its tree's memory."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += p.memory_full_info().pss
            except psutil.NoSuchProcess:
                return
            peak = max(peak, total)
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args[:2]} failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_pss_gib"] = peak / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--days", type=int, default=5000)
    parser.add_argument("--files", type=int, default=20, help="Parquet files the panel is split into")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layout",
        choices=["by-symbol", "by-date"],
        default="by-symbol",
        help="files hold whole symbols (no shuffle) or date ranges of every symbol (shuffle by symbol)",
    )
    parser.add_argument("--impl", choices=["ray", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--panel", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.impl == "ray":
        print(json.dumps(run_ray(args.panel, args.out, args.cpus)))
        return
    if args.impl == "pandas":
        print(json.dumps(run_pandas(args.panel, args.out)))
        return

    with tempfile.TemporaryDirectory(prefix="rayfolio-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        rows = write_panel(work / "panel", args.assets, args.days, args.files, args.seed, args.layout)
        size = sum(f.stat().st_size for f in (work / "panel").iterdir())
        print(
            f"panel: {args.assets} assets x {args.days} days = {rows:,} rows, "
            f"{args.files} Parquet files {args.layout}, {size / 2**20:.0f} MiB "
            f"(written in {time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
        (work / "pandas-out").mkdir()
        ray_result = measure(
            ["--impl", "ray", "--panel", str(work / "panel"), "--out", str(work / "ray-out"), "--cpus", str(args.cpus)]
        )
        pandas_result = measure(["--impl", "pandas", "--panel", str(work / "panel"), "--out", str(work / "pandas-out")])

    rate_ray = ray_result["rows"] / ray_result["seconds"]
    rate_pandas = pandas_result["rows"] / pandas_result["seconds"]
    print(f"{'implementation':<34}{'seconds':>9}{'rows/s':>12}{'peak GiB':>10}")
    print(
        f"{f'Ray Data pipeline ({args.cpus} CPUs)':<34}{ray_result['seconds']:>9.1f}{rate_ray:>12,.0f}"
        f"{ray_result['peak_pss_gib']:>10.2f}"
    )
    print(
        f"{'pandas groupby+rolling/ewm (1 proc)':<34}{pandas_result['seconds']:>9.1f}{rate_pandas:>12,.0f}"
        f"{pandas_result['peak_pss_gib']:>10.2f}"
    )
    print(f"ratio Ray Data / pandas throughput: {rate_ray / rate_pandas:.2f}x (target >= 1.5x)")
    print(
        f"(ray.init took a further {ray_result['ray_init_seconds']:.1f}s, not counted above; "
        f"{os.cpu_count()} cores on this machine)"
    )


if __name__ == "__main__":
    main()
