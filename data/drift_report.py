"""What a person reads about drift: a table of every series, the reasons for the level, and a plot of
each series' PSI against its own calibrated thresholds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on servers and in CI without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from rayfolio.data.drift import LEVELS, DriftResult
from rayfolio.data.markdown import image, table

LEVEL_COLOURS = {"info": "#54a24b", "warning": "#f58518", "critical": "#e45756"}
NO_LEVEL_COLOUR = "#bab0ac"  # insufficient data
PLOT = "drift_psi.png"
AXIS_START = 1e-3  # the log axis starts here: a smaller PSI (0 included) has a bar of no length
THRESHOLD_MARKERS = {  # threshold key -> matplotlib marker style (its label in the legend)
    "warning": {"marker": "|", "markersize": 12, "label": "warning at"},
    "critical": {"marker": "x", "markersize": 7, "label": "critical at"},
    "largest_reachable_psi": {"marker": ".", "markersize": 4, "label": "largest reachable"},
}


def drift_table(result: DriftResult) -> pd.DataFrame:
    """One row per series (features, then predictions), numbers as text ('n/a' where there is none)."""

    def number(value: float | int | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        {
            "series": s.name,
            "PSI": number(s.psi),
            "KS": number(s.ks),
            "values": s.n,
            "warning at": number(s.thresholds.get("warning")),
            "critical at": number(s.thresholds.get("critical")),
            "level": s.level,
            "note": s.note,
        }
        for s in result.series
    ]
    return pd.DataFrame(rows)


def drift_section(result: DriftResult, plots_dir: Path, relative_to: Path | None = None) -> str:
    """The drift section's Markdown (without its heading) and its plot, written to ``plots_dir``;
    image links are relative to ``relative_to`` (default: ``plots_dir``'s parent, where the report sits)."""
    plot = psi_plot(result, plots_dir / PLOT)
    c = result.config
    method = (
        f"PSI on 10 bins at the reference's deciles (bin shares floored at {c.psi_floor:g}) and the two-sample KS "
        f"statistic, each series pooled over all symbols and dates. Features: {result.window[0]} .. "
        f"{result.window[1]} against {result.reference[0]} .. {result.reference[1]} ({result.reference_source}); "
        "forecasts against the production ensemble's validation window; served weights against those served "
        f"before the window. Thresholds: PSI {c.warning:g} / {c.critical:g}, raised per series to the "
        f"{c.warning_quantile:.1%} / {c.critical_quantile:.2%} quantiles of a log-normal fitted to the PSIs of its "
        f"reference's {c.chunk_days}-day chunks against the rest of it (its ordinary wandering)."
    )
    blocks = [f"Level: **{result.level}**.", method, table(drift_table(result), index=False)]
    if result.reasons:
        blocks.append("Why:\n\n" + "\n".join(f"- {reason}" for reason in result.reasons))
    if result.notes:
        blocks.append("Notes:\n\n" + "\n".join(f"- {note}" for note in result.notes))
    blocks.append(image(plot, relative_to or plots_dir.parent, "PSI per series and its thresholds"))
    return "\n\n".join(blocks)


def psi_plot(result: DriftResult, path: Path) -> Path:
    """Horizontal bars of each series' PSI (log scale, coloured by level) with its warning (|) and
    critical (x) thresholds and the largest PSI a window can reach (dotted); series without a PSI
    are listed, without a bar."""
    series = list(result.series)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.28 * max(len(series), 1)))
    y = np.arange(len(series))
    shown = np.array([max(s.psi, AXIS_START) if s.psi is not None else AXIS_START for s in series])
    ax.barh(y, shown - AXIS_START, left=AXIS_START, color=[LEVEL_COLOURS.get(s.level, NO_LEVEL_COLOUR) for s in series])
    for i, s in enumerate(series):
        if s.psi is None:
            ax.text(AXIS_START * 1.2, i, s.level if s.level not in LEVELS else s.note, va="center", fontsize=7)
    for key, style in THRESHOLD_MARKERS.items():
        rows = [(i, s.thresholds[key]) for i, s in enumerate(series) if s.thresholds.get(key) is not None]
        if rows:
            i, value = zip(*rows, strict=True)
            ax.plot(value, i, linestyle="none", color="#222222", **style)
    ax.set_yticks(y, [s.name for s in series], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    right = max([1.0, *shown, *(v for s in series for k, v in s.thresholds.items() if k in THRESHOLD_MARKERS and v)])
    ax.set_xlim(AXIS_START, right * 1.5)
    ax.set_xlabel("PSI against the reference (each series' calibrated thresholds)")
    ax.set_title(f"Drift {result.window[0]} .. {result.window[1]}: {result.level}")
    handles = [Patch(color=c, label=level) for level, c in LEVEL_COLOURS.items()]
    handles += [Line2D([], [], linestyle="none", color="#222222", **style) for style in THRESHOLD_MARKERS.values()]
    ax.legend(handles=handles, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.04), ncol=6, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
