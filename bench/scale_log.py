"""The main job's log read as a timeline (bench/scale.py): which progress line opens which component,
each component's wall seconds, and the stage timers the job itself wrote. Nothing is instrumented: a
component lasts from the line that opens it to the next; a forecaster family's search ends at the last
file its Tune experiment wrote.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

# Progress lines that open a component: (pattern, name; {0}.. are the pattern's groups). A component lasts
# until the next line that opens one (or closes one: CLOSERS).
OPENERS: tuple[tuple[str, str], ...] = (
    (r"^\[1/\d+\] data", "data: feature store, splits, overview plots"),
    (r"^\[2/\d+\] forecasters", "forecasters: set-up"),
    (r"^refit \d+ \(.*\): searching (\w+)", "forecasters: {0} search"),
    (r"^explanations: \d+ dates \(", "forecasters: explanation refresh (SHAP of the latest dates)"),
    (r"^\[3/\d+\] allocation", "allocation: walk-forward ensemble, served factory, market arrays"),
    (r"^searching (ppo|sac): ", "allocation: {0} trials (Tune) + every trial's test walk"),
    (r"^(?:ppo|sac): best validation Sharpe", "allocation: agent registration, tilt choice"),
    (r"^tilt: k ", "allocation: backtest (served path, agents, tilt, baselines), backtest output"),
    (r"^\[4/\d+\] day two", "day two: store without the held-back days"),
    (r"^daily: (.+)$", "day two: daily {0}"),
    (r"^timings: ", "report and plots"),
    (r"^report: ", "process exit"),
)
# Lines that end the component in progress and open an unnamed gap (its time shows as "other").
CLOSERS = (r"^explanations: .* -> ",)
AFTER_SEARCHES = "forecasters: after the searches (Tune teardown, extra seeds, baselines, scoring, registration)"
FAMILY_SEARCH = re.compile(r"^forecasters: (\w+) search$")
STAGE_LINE = re.compile(r"^\[(\d+)/(\d+)\] ([^:]+):")
TIMINGS_LINE = re.compile(r"^timings: (.*)$")


def components(
    lines: list[tuple[float, str]], started: float, ended: float, run_dir: Path, stopped: bool = False
) -> dict[str, float]:
    """Component -> wall seconds, summed over its occurrences (each refit's search of a family), in the
    order first seen. Before the first opener: "startup"; closed gaps: "other". ``stopped``: the run was
    stopped at ``ended``, inside its last component (a search then lasts to the stop)."""
    timeline = [(started, "startup"), *marks(lines), (ended, "")]
    out: dict[str, float] = {}
    searches = _search_ends(run_dir)
    seen: dict[str, int] = {}
    for (at, name), (nxt, following) in itertools.pairwise(timeline):
        end = nxt
        if (fam := FAMILY_SEARCH.match(name)) and not (stopped and following == ""):
            # The family's search ends at the last file its Tune experiment wrote; what follows it (Tune's
            # teardown; after the last family the extra seeds, baselines, scoring, registration) is AFTER.
            k = seen.get(fam.group(1), 0)
            seen[fam.group(1)] = k + 1
            ends = searches.get(fam.group(1), [])
            if k < len(ends) and at < ends[k] < nxt:
                end = ends[k]
        out[name] = out.get(name, 0.0) + end - at
        if end < nxt:
            out[AFTER_SEARCHES] = out.get(AFTER_SEARCHES, 0.0) + nxt - end
    if AFTER_SEARCHES in out:  # shown after the last family's search
        after = out.pop(AFTER_SEARCHES)
        names = list(out)
        last = max(i for i, name in enumerate(names) if FAMILY_SEARCH.match(name))
        before, rest = names[: last + 1], names[last + 1 :]
        out = {**{n: out[n] for n in before}, AFTER_SEARCHES: after, **{n: out[n] for n in rest}}
    return out


def marks(lines: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """(time, component) of every line that opens a component ("other" for a closer)."""
    out: list[tuple[float, str]] = []
    for at, line in lines:
        text = line.strip()
        # Day two's explain step logs the same explanations lines as the forecaster stage's refresh: there
        # they stay in "day two: daily explain".
        in_day_two = bool(out) and out[-1][1].startswith("day two")
        for pattern, name in OPENERS:
            if m := re.match(pattern, text):
                if not (in_day_two and name.startswith("forecasters:")):
                    out.append((at, name.format(*m.groups())))
                break
        else:
            if any(re.match(p, text) for p in CLOSERS) and not in_day_two:
                out.append((at, "other"))
    return out


def _search_ends(run_dir: Path) -> dict[str, list[float]]:
    """Family -> the last modification time of each refit's Tune experiment (``<family>-search`` and its
    Train trials), in refit order."""
    out: dict[str, list[float]] = {}
    for refit in sorted((run_dir / "walk_forward").glob("refit-*")):
        for experiment in sorted((refit / "tune").glob("*-search")):
            family = experiment.name.removesuffix("-search")
            files = [p for d in (experiment, experiment.with_name(f"{experiment.name}-trials")) if d.exists()
                     for p in d.rglob("*") if p.is_file()]  # fmt: skip
            if files:
                out.setdefault(family, []).append(max(p.stat().st_mtime for p in files))
    return out


def stage_times(lines: list[tuple[float, str]], run_dir: Path) -> dict[str, float]:
    """The main job's own stage timers: summary.json's ``timings_s``, else the "timings: ..." line, else
    (a stopped run) the spans between its stage lines."""
    summary = run_dir / "summary.json"
    if summary.exists():
        return {k: float(v) for k, v in json.loads(summary.read_text()).get("timings_s", {}).items()}
    for _, line in lines:
        if m := TIMINGS_LINE.match(line.strip()):
            return {k: float(v) for k, v in re.findall(r"([\w ]+?) ([\d.]+)s(?:, |$)", m.group(1))}
    out, opened = {}, [(at, m.group(3)) for at, line in lines if (m := STAGE_LINE.match(line.strip()))]
    for (at, name), (nxt, _) in itertools.pairwise(opened):
        out[name] = nxt - at
    return out
