"""ONNX export speed on the quickstart models: forecasts per second per date-batch (a batch is
all N assets of B dates, B = 1 and 64) for torch fp32, ONNX fp32 and ONNX int8, on 1 and 2
threads (torch.set_num_threads / ONNX Runtime's intra-op threads), all in the same run, with the
ratio to torch fp32 (the issue's target: ONNX int8 >= 1.5x torch fp32 for the LSTM), and the
accuracy gate's figures of the same export.

The production LSTM and Transformer of the registry are exported (``export_forecaster``, int8)
into a temporary copy of it: the registry itself is never written. Each (model, B, threads) cell
times the three runtimes in alternating rounds on the same inputs (the last B validation dates)
and keeps the median, so that a busy machine slows all three alike.

    python -m bench.export_latency [--registry runs/registry] [--store runs/quickstart/features]
                                   [--batches 1 64] [--threads 1 2] [--repeats 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import pandas as pd
import torch

from rayfolio.data.markdown import table
from rayfolio.data.store import FeatureStore
from rayfolio.training.ensemble import load_forecasters
from rayfolio.training.export import GateLimits, export_forecaster, latency_ms, torch_threads, validation_dates
from rayfolio.training.onnx_runtime import RUNTIMES
from rayfolio.training.panel import Panel, windows
from rayfolio.training.registry import ModelRegistry

MODELS = ("lstm-forecaster", "transformer-forecaster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=Path("runs/registry"))
    parser.add_argument("--store", type=Path, default=Path("runs/quickstart/features"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="dates per batch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runtime and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the three runtimes")
    args = parser.parse_args()

    panel = Panel.from_store(FeatureStore(args.store))
    rows, gate = [], []
    with tempfile.TemporaryDirectory() as tmp:
        registry = ModelRegistry(shutil.copytree(args.registry, Path(tmp) / "registry"))
        for name in MODELS:
            exported = export_forecaster(registry, name, panel, quantize="int8", stage=None,
                                         limits=GateLimits(latency_repeats=args.repeats))  # fmt: skip
            report, version = exported.report, exported.version.version
            for h in panel.horizons:
                gate.append({"model": name, "horizon": h,
                             "fp32 max abs diff": f"{max(report.fp32_max_abs_diff.values()):.1e}",
                             "int8 median Spearman": f"{report.median_spearman['onnx-int8'][h]:.4f}",
                             "Rank IC torch": f"{report.rank_ic['torch'][h]:+.5f}",
                             "Rank IC int8": f"{report.rank_ic['onnx-int8'][h]:+.5f}",
                             "moved": f"{report.rank_ic_shift['onnx-int8'][h]:.5f}"})  # fmt: skip
            for threads in args.threads:
                members = {r: load_forecasters(registry, panel, versions={name: version}, runtime=r, threads=threads)[0]
                           for r in RUNTIMES}  # fmt: skip
                ts = validation_dates(members["torch"], registry.get(name, version).card, panel)
                for b in args.batches:
                    t = ts[-b:]
                    x = torch.from_numpy(windows(members["torch"].scaled, t, members["torch"].window))
                    nb = torch.from_numpy(members["torch"].neighbours[t])
                    times: dict[str, list[float]] = {r: [] for r in RUNTIMES}
                    with torch_threads(threads):
                        for _ in range(args.rounds):
                            for r, member in members.items():
                                times[r].append(latency_ms(member.models, x, nb, args.repeats))
                    per_s = {r: 1e3 / statistics.median(ms) for r, ms in times.items()}
                    rows.append({"model": name, "dates/batch": b, "threads": threads,
                                 **{f"{r} batches/s": round(v, 1) for r, v in per_s.items()},
                                 "onnx/torch": round(per_s["onnx"] / per_s["torch"], 2),
                                 "int8/torch": round(per_s["onnx-int8"] / per_s["torch"], 2)})  # fmt: skip
    print(f"forecasts per second per date-batch ({len(panel.symbols)} assets per date; median of {args.rounds} "
          f"rounds x {args.repeats} calls; torch {torch.__version__}):")  # fmt: skip
    print(table(pd.DataFrame(rows), index=False))
    print("\naccuracy gate of the same exports (validation dates of each model's calendar):")
    print(table(pd.DataFrame(gate), index=False))


if __name__ == "__main__":
    main()
