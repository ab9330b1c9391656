"""Small panels written to disk in the shapes users bring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rayfolio.data.synthetic import SyntheticPanelConfig, generate_panel


def small_panel(n_assets: int = 4, n_days: int = 320, seed: int = 3) -> pd.DataFrame:
    frame = generate_panel(SyntheticPanelConfig(n_assets=n_assets, n_days=n_days, seed=seed))
    frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d")
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def split_by_date(frame: pd.DataFrame, directory: Path, parts: int = 3) -> Path:
    """Each file holds every symbol for a stretch of dates: symbols span files."""
    dates = np.array_split(np.sort(frame["date"].unique()), parts)
    for k, chunk in enumerate(dates):
        part = frame[frame["date"].isin(chunk)].sample(frac=1.0, random_state=k)  # unsorted on purpose
        write_csv(part, directory / f"part-{k}.csv")
    return directory


def split_by_symbol(frame: pd.DataFrame, directory: Path) -> Path:
    """One Parquet file per symbol."""
    directory.mkdir(parents=True, exist_ok=True)
    for symbol, rows in frame.groupby("symbol"):
        rows.to_parquet(directory / f"{symbol}.parquet", index=False)
    return directory
