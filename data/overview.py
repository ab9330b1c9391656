"""What a person reads about a feature store: splits, feature statistics, plots,
and the data section of a run report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs on servers and in CI without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rayfolio.data.markdown import Report, image, table
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore, StoreSummary

SPLIT_COLOURS = {"train": "#4c78a8", "validation": "#f58518", "test": "#54a24b"}


@dataclass(frozen=True)
class DataOverview:
    splits: pd.DataFrame  # one row per split: first, last, trading days, rows
    features: pd.DataFrame  # one row per feature/label: definition and train statistics
    largest_moves: pd.DataFrame  # the biggest one-day moves: where data errors show first
    plots: tuple[Path, ...]


def data_overview(store: FeatureStore, splitter: PurgedDateSplitter, plot_dir: Path) -> DataOverview:
    """Split table, per-feature train statistics and overview plots for ``store``."""
    frame = store.to_pandas()
    parts = splitter.split(frame)
    splits = pd.DataFrame(
        [
            {
                "split": name,
                "first": part["date"].min().date(),
                "last": part["date"].max().date(),
                "trading days": part["date"].nunique(),
                "rows": len(part),
            }
            for name, part in parts.items()
        ]
    ).set_index("split")
    definitions = {f["name"]: f["definition"] for f in store.manifest["features"]}
    definitions |= {label["name"]: label["definition"] for label in store.manifest["labels"]}
    train = parts["train"][list(definitions)]
    # Statistics on the training split only: what scaling and coverage look
    # like to a model fitted there, without peeking at the test period.
    features = pd.DataFrame(
        {
            "definition": pd.Series(definitions),
            "coverage": train.notna().mean(),
            "mean": train.mean(),
            "std": train.std(),
            "min": train.min(),
            "max": train.max(),
        }
    )
    moves = frame.loc[frame["ret_1"].abs().nlargest(8).index, ["date", "symbol", "ret_1"]]
    moves = moves.assign(date=moves["date"].dt.date, simple_return=np.expm1(moves["ret_1"]))
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = (
        _price_paths(frame, parts, plot_dir / "prices.png"),
        _regimes(frame, plot_dir / "volatility_regimes.png"),
    )
    return DataOverview(splits, features, moves, plots)


def data_section(report: Report, summary: StoreSummary, overview: DataOverview, run_dir: Path) -> None:
    """Add "Data" to ``report``: the store, the splits, feature statistics, the largest moves, the plots."""
    report.add(
        "Data",
        f"{summary.rows:,} rows, {summary.symbols} symbols, {summary.start} .. {summary.end}; "
        f"{len(summary.features)} features and {len(summary.labels)} labels, point in time "
        "(a feature at date t uses only rows dated <= t).",
        "Splits (the last horizon's worth of trading days before each boundary is purged, "
        "so no label reaches into the next split):",
        table(overview.splits, floatfmt=".0f"),
        "Features and labels, statistics on the training split:",
        table(overview.features),
        "Largest one-day moves (check these first when a source looks wrong: splits, bad ticks):",
        table(overview.largest_moves, floatfmt=".3f", index=False),
        *(image(p, run_dir, p.stem.replace("_", " ")) for p in overview.plots),
    )


def _shade_splits(ax: plt.Axes, parts: dict[str, pd.DataFrame]) -> None:
    for name, part in parts.items():
        ax.axvspan(part["date"].min(), part["date"].max(), color=SPLIT_COLOURS[name], alpha=0.08, label=name)


def _price_paths(frame: pd.DataFrame, parts: dict[str, pd.DataFrame], path: Path, labelled: int = 25) -> Path:
    """Cumulative log return of every symbol (up to 200), splits shaded.

    With few symbols each line is named at its right end; a legend of twenty
    entries would cover the chart.
    """
    cumulative = frame.pivot(index="date", columns="symbol", values="ret_1").fillna(0.0).cumsum()
    shown = cumulative.iloc[:, :200]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for symbol in shown.columns:
        ax.plot(shown.index, shown[symbol].to_numpy(), linewidth=0.7, alpha=0.75)
        if shown.shape[1] <= labelled:
            ax.annotate(symbol, (shown.index[-1], shown[symbol].iloc[-1]), fontsize=7, xytext=(3, 0),
                        textcoords="offset points", va="center")  # fmt: skip
    ax.plot(cumulative.index, cumulative.median(axis=1).to_numpy(), color="black", linewidth=2.0, label="median")
    _shade_splits(ax, parts)
    ax.set_title("Cumulative log return per symbol (shaded: train / validation / test)")
    ax.set_ylabel("log(price / first price)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _regimes(frame: pd.DataFrame, path: Path) -> Path:
    """Median 20-day volatility and the share of symbols in the high-vol regime."""
    by_date = frame.groupby("date")
    vol = by_date["vol_20"].median()
    stressed = by_date["vol_regime"].mean()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=(2, 1))
    top.plot(vol.index, vol.to_numpy(), color="#4c78a8", linewidth=0.9)
    top.set_ylabel("median vol_20 (annualised)")
    top.set_title("Volatility and regime (vol_20 above the past year's vol)")
    bottom.fill_between(stressed.index, np.nan_to_num(stressed.to_numpy()), color="#e45756", step="mid", alpha=0.7)
    bottom.set_ylabel("share in high-vol regime")
    bottom.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
