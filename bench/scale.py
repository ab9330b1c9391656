"""Where the main job's time goes as the universe grows: `rayfolio run` on synthetic universes of several sizes.

    python -m bench.scale [--assets 50 100 200 400] [--days 2520] [--timeout 3600] [--keep] [--smoke]
    python -m bench.scale --from-kept <top>/assets-50 <other top>/assets-400 ...   # tables kept runs

Each size is one `rayfolio run` (the CLI, the same code path as a user's) in a fresh process, so Ray and
memory start clean, with configs/quickstart.yaml's settings on the synthetic source (``synthetic.n_assets``
assets x ``--days`` business days from 2000-01-03), each into its own temporary run directory and registry.
Splits: at 2,520 days the issue's 2006/2007/2008 (train to 2006-12-31, validation 2007, test from 2008-01-01:
~7 / 1 / 1.7 years, the quickstart's proportions); at other lengths the same proportions in trading days,
the validation split kept longer than the purge. ``--smoke`` cuts only the training budgets (as
tests/cluster/test_cli.py's quickstart_with_small_budgets does), for checking the bench itself at tiny sizes.

Nothing is instrumented: times come from what the run already writes. The stages from summary.json's
``timings_s`` (the main job's own timers; the "timings: ..." line on stderr when there is no summary); the
components from the arrival time of the progress lines the run logs on stderr (each line that opens a step,
e.g. "refit 0 (...): searching lstm", "searching ppo: ...", "daily: append", opens a component that lasts to
the next such line), with each forecaster family's search ended at the last file its Tune experiment wrote;
"report and plots" is from the "timings:" line to the "report: ..." line (Ray is already shut down then),
"process exit" from there to the exit; "startup" from the start to the first stage line (imports, config
checks, Ray start). The resident memory of the run's processes (the CLI, Ray's and its workers'), summed, is
sampled every second and its peak shown. A size that runs past ``--timeout`` is stopped and shown as "> T s" in the
component (and stage) it was in; the bench goes on with the next size.

Prints one table, component x size wall seconds, the ratio of each to the 100-asset time (to the smallest
size when 100 is not among the sizes), and the issue's targets: 400 assets in <= 15 minutes, and every stage
of 400 assets within 4.5x its 100-asset time. Prints figures; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from bench.scale_log import STAGE_LINE, components, marks, stage_times

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
START = "2000-01-03"  # the synthetic source's first business day (data/synthetic.py SyntheticPanelConfig.start)
ISSUE_DAYS = 2520
ISSUE_SPLITS = {  # the issue's 2006/2007/2008 on 2,520 days (2000-01-03 .. 2009-08-28)
    "train_end": "2006-12-31",
    "validation_start": "2007-01-01",
    "validation_end": "2007-12-31",
    "test_start": "2008-01-01",
}
TARGET_TOTAL_S = 15 * 60  # 400 assets end to end on the 2-core machine
TARGET_RATIO = 4.5  # 400-asset time over 100-asset time, every stage
MIN_REFERENCE_S = 0.5  # no ratio to a reference time shorter than this (noise)
PEAK_ROW = "peak RSS summed over the run's processes (GB; shared pages count in each)"
STAGE_NAMES = ("data", "forecasters", "allocation", "day two", "total")


@dataclass
class SizeResult:
    n_assets: int
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)
    stopped_in: str | None = None  # the stage and component a timed-out run was in
    stopped_stage: str | None = None
    stopped_component: str | None = None
    exit_code: int | None = None
    peak_rss_gb: float = float("nan")
    log: Path | None = None
    error: str = ""


# ----- the run config ------------------------------------------------------------------------------------


def split_dates(n_days: int) -> dict[str, str]:
    """The issue's splits at 2,520 days; otherwise its proportions in trading days (train 72%, validation
    10.4%, test the rest), the validation split at least 100 days (a 60-day purge comes off its end)."""
    if n_days == ISSUE_DAYS:
        return dict(ISSUE_SPLITS)
    dates = pd.bdate_range(START, periods=n_days)
    test = max(40, round(0.17 * n_days))
    validation = max(100, round(0.104 * n_days))
    train_end = n_days - test - validation - 1
    if train_end < 100:
        raise SystemExit(f"--days {n_days} is too short: at least ~{100 + 100 + 40 + 1} business days")
    iso = lambda i: dates[i].date().isoformat()  # noqa: E731
    return {
        "train_end": iso(train_end),
        "validation_start": iso(train_end + 1),
        "validation_end": iso(n_days - test - 1),
        "test_start": iso(n_days - test),
    }


def run_config(n_assets: int, n_days: int, root: Path, smoke: bool) -> dict:
    """configs/quickstart.yaml on the synthetic source, written under ``root`` (run dir and registry)."""
    config = yaml.safe_load(QUICKSTART.read_text())
    config["name"] = f"scale-{n_assets}"
    config["runs_dir"] = str(root / "runs")
    config["registry"] = str(root / "registry")
    config["data"]["source"] = "synthetic"
    config["data"]["synthetic"] = {"n_assets": n_assets, "n_days": n_days}
    config["splits"] = split_dates(n_days)
    if smoke:
        cut_training_budgets(config)
    return config


def cut_training_budgets(config: dict) -> dict:
    """A run config (a quickstart-like mapping, changed in place and returned) with only its training
    budgets cut to the least that still runs every stage: one search trial per family and agent, one
    epoch, a few hundred agent steps. The main-job test and ``--smoke`` use it."""
    forecasters = config["forecasters"]
    forecasters["train"]["epochs"] = 1
    forecasters["search"].update(num_samples=1, hidden=[16], window=[20])
    agents = config["allocation"]["agents"]
    agents["ppo"].update(timesteps=256, evaluations=1, num_samples=1, seeds=[0], n_steps=[64], batch_size=64,
                         n_epochs=1)  # fmt: skip
    agents["sac"].update(timesteps=200, evaluations=1, num_samples=1, seeds=[0], batch_size=32,
                         learning_starts=50)  # fmt: skip
    return config


# ----- one size ------------------------------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (Ray's raylet, GCS and workers), 0 when it is gone."""
    try:
        import psutil
    except ImportError:
        return 0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_size(n_assets: int, n_days: int, timeout: float, smoke: bool, root: Path) -> SizeResult:
    """One `rayfolio run` in a fresh process; its stderr lines timestamped as they arrive."""
    root.mkdir(parents=True, exist_ok=True)
    config = run_config(n_assets, n_days, root, smoke)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = root / "run.log"
    result = SizeResult(n_assets, log=log_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAYFOLIO_REGISTRY", None)
    command = [sys.executable, "-m", "rayfolio.cluster.cli", "run", "--config", str(path)]
    lines: list[tuple[float, str]] = []
    started = time.time()
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, start_new_session=True)  # fmt: skip
    peak = [0]

    def read() -> None:
        with log_path.open("w") as log:
            for line in process.stdout:
                now = time.time()
                lines.append((now, line.rstrip("\n")))
                log.write(f"{now - started:9.2f}  {line}")
                log.flush()

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(process.pid))
            time.sleep(1.0)

    reader = threading.Thread(target=read, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    try:
        result.exit_code = process.wait(timeout=timeout)
        ended = time.time()
    except subprocess.TimeoutExpired:
        ended = time.time()  # what follows is the bench stopping it
        _stop(process)
        result.exit_code = None
    reader.join(timeout=30)
    sampler.join(timeout=5)
    lines = [(at, line) for at, line in lines if at <= ended]  # not the lines of its shutdown
    result.seconds = ended - started
    result.peak_rss_gb = peak[0] / 2**30 if peak[0] else float("nan")
    run_dir = root / "runs" / config["name"]
    result.components = components(lines, started, ended, run_dir, stopped=result.exit_code is None)
    result.stages = stage_times(lines, run_dir)
    if result.exit_code is None:
        opened = [(at, m.group(3)) for at, line in lines if (m := STAGE_LINE.match(line.strip()))]
        if opened:  # the stage in progress, as far as it got
            result.stages[opened[-1][1]] = ended - opened[-1][0]
        result.stopped_stage = opened[-1][1] if opened else None
        result.stopped_component = ([(0.0, "startup"), *marks(lines)])[-1][1]
        result.stopped_in = f"stage {result.stopped_stage or 'startup'}, {result.stopped_component}"
    elif result.exit_code != 0:
        result.error = next((line for _, line in reversed(lines) if line.strip()), f"exit code {result.exit_code}")
    return result


def from_kept(root: Path) -> SizeResult:
    """A size kept by ``--keep`` (``<top>/assets-N``), rebuilt from its run.log (each line's seconds from
    the start) and run dir, to table runs measured apart (before and after a change). The start is when
    its config.yaml was written (just before the run started), the end its last logged line; peak RSS
    is not in the log."""
    started = (root / "config.yaml").stat().st_mtime
    config = yaml.safe_load((root / "config.yaml").read_text())
    lines = [(started + float(raw[:9]), raw[11:]) for raw in (root / "run.log").read_text().splitlines()
             if raw[:9].strip().replace(".", "", 1).isdigit()]  # fmt: skip
    result = SizeResult(int(config["data"]["synthetic"]["n_assets"]), log=root / "run.log")
    result.seconds = lines[-1][0] - started if lines else 0.0
    finished = any(line.startswith("report: ") for _, line in lines)
    result.exit_code = 0 if finished else None
    run_dir = root / "runs" / config["name"]
    result.components = components(lines, started, started + result.seconds, run_dir, stopped=not finished)
    result.stages = stage_times(lines, run_dir)
    return result


def _stop(process: subprocess.Popen) -> None:
    """The run's whole process group (the CLI and the Ray it started): SIGINT (Ray shuts down), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----- the table -----------------------------------------------------------------------------------------


def table(results: list[SizeResult], timeout: float) -> tuple[pd.DataFrame, int]:
    """Rows: the stages, then the components; columns: seconds per size, then ratio to the reference size."""
    sizes = [r.n_assets for r in results]
    reference = 100 if 100 in sizes else min(sizes)
    stages = [s for s in STAGE_NAMES if s == "total" or any(s in r.stages for r in results)]
    rows: list[str] = [f"stage: {s}" for s in stages]
    for r in results:
        rows += [c for c in r.components if c not in rows]
    rows += [PEAK_ROW]
    values: dict[int, dict[str, float | None]] = {}
    text: dict[str, dict[str, str]] = {}
    for r in results:
        numbers = {f"stage: {s}": r.stages.get(s) for s in stages}
        numbers |= {c: r.components.get(c) for c in rows[len(stages) :]}
        numbers[PEAK_ROW] = r.peak_rss_gb
        if r.exit_code is None and numbers["stage: total"] is None:
            numbers["stage: total"] = r.seconds
        # A stopped run's stage and component in progress (and its total) are lower bounds.
        bounds = {"stage: total", f"stage: {r.stopped_stage}", r.stopped_component} if r.exit_code is None else set()
        values[r.n_assets] = {k: None if k in bounds else v for k, v in numbers.items()}
        text[f"{r.n_assets} (s)"] = {
            k: "" if v is None or not math.isfinite(v) else f"> {v:.0f}" if k in bounds
            else f"{v:.2f}" if k == PEAK_ROW else f"{v:.1f}"
            for k, v in numbers.items()
        }  # fmt: skip
    for r in results:
        if r.n_assets == reference:
            continue
        ratios = {}
        for row in rows:
            a, b = values[r.n_assets].get(row), values[reference].get(row)
            known = a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
            ratios[row] = f"{a / b:.2f}x" if known and b >= MIN_REFERENCE_S else ""
        text[f"{r.n_assets}/{reference}"] = ratios
    return pd.DataFrame(text, index=rows), reference


def targets(results: list[SizeResult], timeout: float) -> list[str]:
    by_size = {r.n_assets: r for r in results}
    out = []
    big = by_size.get(400)
    if big is None:
        out.append(f"400 assets <= {TARGET_TOTAL_S // 60} min: not measured (no 400 in --assets)")
    elif big.exit_code is None:
        out.append(f"400 assets <= {TARGET_TOTAL_S // 60} min: MISSED (> {timeout:.0f} s, stopped in {big.stopped_in})")
    else:
        total = big.stages.get("total", big.seconds)
        verdict = "met" if total <= TARGET_TOTAL_S else "MISSED"
        out.append(f"400 assets <= {TARGET_TOTAL_S // 60} min: {verdict} ({total:.0f} s; process {big.seconds:.0f} s)")
    small = by_size.get(100)
    if big is None or small is None:
        out.append(f"every stage 400/100 <= {TARGET_RATIO}x: not measured (needs 100 and 400 in --assets)")
        return out
    for stage in STAGE_NAMES:
        a, b = big.stages.get(stage), small.stages.get(stage)
        if b is None:
            continue
        if a is None or stage == big.stopped_stage:
            out.append(f"{stage}: 400/100 <= {TARGET_RATIO}x: MISSED (400 was stopped before it ended)")
            continue
        verdict = "met" if a / b <= TARGET_RATIO else "MISSED"
        out.append(f"{stage}: 400/100 = {a / b:.2f}x <= {TARGET_RATIO}x: {verdict}")
    return out


# ----- main ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[50, 100, 200, 400], help="universe sizes")
    parser.add_argument("--days", type=int, default=ISSUE_DAYS, help="business days of the synthetic panel")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per size before it is stopped")
    parser.add_argument("--keep", action="store_true", help="keep every size's run dir, registry and log")
    parser.add_argument("--smoke", action="store_true",
                        help="the test suite's tiny training budgets: checks the bench, measures nothing")  # fmt: skip
    parser.add_argument("--from-kept", type=Path, nargs="+", metavar="DIR",
                        help="no runs: a table of sizes kept by --keep (<top>/assets-N)")  # fmt: skip
    args = parser.parse_args()
    if args.from_kept:
        results = sorted((from_kept(d) for d in args.from_kept), key=lambda r: r.n_assets)
        frame, reference = table(results, args.timeout)
        print(f"wall seconds per component and size (to each run's last logged line); ratios to the "
              f"{reference}-asset time")  # fmt: skip
        print(frame.to_markdown(colalign=("left", *["right"] * frame.shape[1]), disable_numparse=True))
        for line in targets(results, args.timeout):
            print(f"  {line}")
        return
    sizes = sorted(set(args.assets))
    top = Path(tempfile.mkdtemp(prefix="rayfolio-scale-"))
    splits = split_dates(args.days)
    print(f"rayfolio run, {QUICKSTART.relative_to(REPO)} on synthetic {', '.join(map(str, sizes))} assets x "
          f"{args.days:,} days from {START}; splits: train to {splits['train_end']}, validation "
          f"{splits['validation_start']}..{splits['validation_end']}, test from {splits['test_start']}"
          f"{'; SMOKE budgets' if args.smoke else ''}; timeout {args.timeout:.0f} s per size; "
          f"{os.cpu_count()} CPUs; started {dt.datetime.now():%Y-%m-%d %H:%M}", flush=True)  # fmt: skip
    results = []
    try:
        for n in sizes:
            r = run_size(n, args.days, args.timeout, args.smoke, top / f"assets-{n}")
            status = ("ok" if r.exit_code == 0 else f"stopped after {args.timeout:.0f} s in {r.stopped_in}"
                      if r.exit_code is None else f"FAILED ({r.error})")  # fmt: skip
            print(f"{n} assets: {r.seconds:.0f} s, {status}; log {r.log}", flush=True)
            results.append(r)
    finally:
        if results:
            frame, reference = table(results, args.timeout)
            print(f"\nwall seconds per component and size; ratios to the {reference}-asset time")
            print(frame.to_markdown(colalign=("left", *["right"] * frame.shape[1]), disable_numparse=True))
            print("\ntargets (the issue's):")
            for line in targets(results, args.timeout):
                print(f"  {line}")
        if args.keep:
            print(f"\nkept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
