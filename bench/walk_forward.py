"""Walk-forward refits on Ray: K refits in parallel vs one after another, in the same run.

    python -m bench.walk_forward [--refits 2 --every 24 --families lstm --samples 2]

Both passes run the same refits of the embedded S&P 500 sample (features built once) with the same
small search, each in a fresh directory (no saved search is reused). The parallel pass runs the refits
as Ray tasks, as many at once as the machine holds trials for (Train workers of 0.45 CPU, one whole CPU
left to Ray Data): 2 on this 2-core machine. Then it projects the wall time of a yearly walk-forward
(23 refits, configs/full.yaml's schedule) on clusters of N such nodes from the measured per-refit time,
at these model sizes: ceil(23 / (N x refits per node)) rounds of one refit each. Prints figures;
passes or fails nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
import time
from pathlib import Path

import ray

from rayfolio.cluster.runtime import init_local_ray
from rayfolio.data.sources import make_source
from rayfolio.data.splits import SplitConfig, walk_forward
from rayfolio.data.store import FeatureStore, prepare_feature_store
from rayfolio.training.config import ForecastersConfig, ScalingOptions, SearchConfig, TrainConfig
from rayfolio.training.panel import Panel
from rayfolio.training.walk_forward import refits_at_once, run_refits

FIRST = SplitConfig(
    train_end=dt.date(2010, 12, 31),
    validation_start=dt.date(2011, 1, 1),
    validation_end=dt.date(2012, 12, 31),
    test_start=dt.date(2013, 1, 1),
)
FULL_SCHEDULE_REFITS = 23  # yearly over 2000-2022


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refits", type=int, default=2)
    parser.add_argument("--every", type=int, default=24, help="months between refits")
    parser.add_argument("--families", nargs="+", default=["lstm"])
    parser.add_argument("--samples", type=int, default=2, help="search configurations per family")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    config = ForecastersConfig(
        families=tuple(args.families),
        train=TrainConfig(hidden=16, window=20, epochs=args.epochs, train_stride=5, patience=2),
        search=SearchConfig(num_samples=args.samples, hidden=(16,), layers=(1,), window=(20,)),
        # One worker of 0.45 CPU per trial: two trials (two refits) fit beside Ray Data on 2 cores.
        scaling=ScalingOptions(num_workers=1, cpus_per_worker=0.45),
    )
    init_local_ray(include_dashboard=True, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        prepare_feature_store(make_source("sp500", None), root / "store", (5, 20, 60))
        panel = Panel.from_store(FeatureStore(root / "store"))
        print(f"feature store: {time.perf_counter() - started:.1f} s")
        refits = walk_forward(FIRST, args.every, 60, panel.dates)[: args.refits]
        starts = ", ".join(str(r.start) for r in refits)
        print(f"{len(refits)} refits at {starts}; families {', '.join(args.families)}, "
              f"{args.samples} configurations each, {args.epochs} epochs")  # fmt: skip

        started = time.perf_counter()
        sequential = run_refits(panel, refits, config, root / "sequential", parallel=1, retries=0)
        one_by_one = time.perf_counter() - started
        at_once = refits_at_once(config, len(refits), None)
        started = time.perf_counter()
        run_refits(panel, refits, config, root / "parallel", parallel=at_once, retries=0)
        together = time.perf_counter() - started

    per_refit = [r.seconds for r in sequential]
    print(f"\none after another: {one_by_one:.1f} s (per refit: {', '.join(f'{s:.1f}' for s in per_refit)} s)")
    print(f"{at_once} at once on Ray:   {together:.1f} s")
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"speed-up: {one_by_one / together:.2f}x (ideal {at_once}x on {cpus:.0f} CPUs)")
    mean = sum(per_refit) / len(per_refit)
    print(f"\nprojected yearly walk-forward ({FULL_SCHEDULE_REFITS} refits, these model sizes, "
          f"{at_once} refit(s) per node of this size, {mean:.0f} s per refit):")  # fmt: skip
    for nodes in (1, 4, 8, FULL_SCHEDULE_REFITS):
        rounds = math.ceil(FULL_SCHEDULE_REFITS / (nodes * at_once))
        print(f"  {nodes:>2} node(s): {rounds:>2} round(s) ~ {rounds * mean / 60:.1f} min")
    ray.shutdown()


if __name__ == "__main__":
    main()
