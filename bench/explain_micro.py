"""One date's forecast explanation (explain/expected_gradients.py ``explain_date``) as the universe grows:
CPU seconds, wall seconds and peak resident memory of one forecaster family at N assets, in a fresh process.

    python -m bench.explain_micro [--families lstm gat] [--assets 100 400] [--impl PATH] [--threads 1] [--rows R]

Models: the quickstart's trained shape (configs/quickstart.yaml; the registry's cards: hidden 32, window 20,
one layer, two heads, 18 features, horizons 5/20/60, graph_k 4 + 2 sector neighbours) with random weights:
the cost does not depend on the weights. The service's method settings: 16 background dates, 128 samples.
Inputs: a random panel of 300 days (numbers do not matter, only shapes). ``--impl`` explains with another copy
of the module (e.g. the previous version saved to a file) to compare before and after. One thread, as in a
Ray task. Peak memory: the process's ru_maxrss (the imports and the panel included, ~0.4-0.5 GB: subtract
the "baseline" column, measured just before the explanation, for the explanation's own share).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time

FEATURES = 18
HORIZONS = (5, 20, 60)
DAYS = 300
NEIGHBOURS = 6  # graph_k 4 + graph_sector_k 2


def one(family: str, n: int, impl: str | None, threads: int, rows: int | None = None) -> dict:
    import numpy as np
    import torch

    from rayfolio.training.config import TrainConfig
    from rayfolio.training.ensemble import ForecastEnsemble, Forecaster
    from rayfolio.training.models import build_model
    from rayfolio.training.panel import Panel

    torch.set_num_threads(threads)
    if impl:
        spec = importlib.util.spec_from_file_location("eg_impl", impl)
        eg = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = eg  # its dataclasses look their module up
        spec.loader.exec_module(eg)
    else:
        from rayfolio.explain import expected_gradients as eg
    rng = np.random.default_rng(0)
    names = ("ret_1", *(f"f{i}" for i in range(1, FEATURES)))
    dates = np.datetime64("2010-01-04") + np.arange(DAYS).astype("timedelta64[D]")
    features = (0.01 * rng.standard_normal((DAYS, n, FEATURES))).astype(np.float32)
    labels = rng.standard_normal((DAYS, n, len(HORIZONS))).astype(np.float32)
    symbols = np.array([f"A{i:03d}" for i in range(n)])
    panel = Panel(dates, symbols, names, HORIZONS, features, labels, rng.standard_normal((DAYS, n)))
    scaled = rng.standard_normal((DAYS, n, FEATURES)).astype(np.float32)
    graph = np.stack([rng.permutation(n)[:NEIGHBOURS] for _ in range(n)])  # (N, k) one table for every day
    torch.manual_seed(0)
    config = TrainConfig(family=family, hidden=32, window=20, layers=1, heads=2)
    model = build_model(family, config.model_kwargs(FEATURES, len(HORIZONS))).eval()
    neighbours = np.broadcast_to(graph, (DAYS, n, NEIGHBOURS))
    forecaster = Forecaster(f"{family}-forecaster", "v0001", (model,), 20, scaled, neighbours, HORIZONS,
                            np.array([0.02, 0.03, 0.01]))  # fmt: skip
    ensemble = ForecastEnsemble([forecaster], panel)
    background = np.linspace(40, 200, 16).astype(int)
    method = eg.method_for(panel, background, 128)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cpu, wall = time.process_time(), time.perf_counter()
    extra = {} if rows is None else {"rows_per_pass": rows}
    explained = eg.explain_date(ensemble, DAYS - 1, background, names, method, **extra)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    worst = max(float(eg.completeness_error(a).max() / max(np.abs(a.values - a.base_values).max(), 1e-300))
                for a in explained.values())  # fmt: skip
    checksum = float(sum(np.abs(a.contributions).sum() for a in explained.values()))
    return {"family": family, "assets": n, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "peak_gb": round(peak, 2), "baseline_gb": round(baseline, 2), "completeness": round(worst, 4),
            "checksum": checksum}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["lstm", "gat"])
    parser.add_argument("--assets", nargs="+", type=int, default=[100, 400])
    parser.add_argument("--impl", default=None, help="a copy of explain/expected_gradients.py to time instead")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=None, help="rows_per_pass (default: the module's)")
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.impl, args.threads, args.rows)))
        return
    print(f"{'family':<8}{'N':>5}{'cpu s':>8}{'wall s':>8}{'peak GB':>9}{'baseline':>9}{'complete':>10}  checksum")
    for family in args.families:
        for n in args.assets:
            command = [sys.executable, "-m", "bench.explain_micro", "--one", family, str(n)]
            command += ["--threads", str(args.threads)]
            if args.impl:
                command += ["--impl", args.impl]
            if args.rows:
                command += ["--rows", str(args.rows)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{family:<8}{n:>5}  failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{family:<8}{n:>5}{r['cpu_s']:>8}{r['wall_s']:>8}{r['peak_gb']:>9}{r['baseline_gb']:>9}"
                  f"{r['completeness']:>10}  {r['checksum']:.6g}")  # fmt: skip


if __name__ == "__main__":
    main()
