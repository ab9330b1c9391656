"""The production forecasts as they were made: one row per (date, symbol, horizon), appended date by
date (``rayfolio forecasts refresh``) and never rewritten, so what was forecast on a day stays on
record after the models change (each row names the versions that made it).

Columns: ``date``, ``symbol``, ``horizon``, ``expected_return`` (the ensemble's h-day log return),
``z`` (its cross-sectional z-score), ``confidence``, ``models`` (``name=version`` list, sorted).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from rayfolio.training.ensemble import EnsembleForecast

COLUMNS = ("date", "symbol", "horizon", "expected_return", "z", "confidence", "models")


def models_key(versions: dict[str, str]) -> str:
    """``{name: version}`` -> ``"gat=3,lstm=5"``: which models made a forecast."""
    return ",".join(f"{name}={version}" for name, version in sorted(versions.items()))


def forecast_rows(forecasts: list[EnsembleForecast], symbols: np.ndarray, versions: dict[str, str]) -> pd.DataFrame:
    """Long rows of ``forecasts`` (each over the panel's N ``symbols`` and H horizons)."""
    if not forecasts:
        return pd.DataFrame(columns=list(COLUMNS))
    h = forecasts[0].horizons
    n = len(symbols)
    stack = lambda values: np.stack(values).reshape(-1)  # (D, N, H) -> D*N*H, date-major  # noqa: E731
    frame = pd.DataFrame(
        {
            "date": np.repeat(np.array([f.date for f in forecasts], dtype="datetime64[ns]"), n * len(h)),
            "symbol": np.tile(np.repeat(np.asarray(symbols, dtype=object), len(h)), len(forecasts)),
            "horizon": np.tile(np.asarray(h, dtype=np.int64), n * len(forecasts)),
            "expected_return": stack([f.expected_return for f in forecasts]),
            "z": stack([f.z for f in forecasts]),
            "confidence": stack([f.confidence for f in forecasts]),
        }
    )
    frame["models"] = models_key(versions)
    return frame


class ForecastLog:
    """A Parquet file of forecast rows, appended whole or not at all."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> pd.DataFrame:
        if not self.path.is_file():
            return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        return pd.read_parquet(self.path)

    def last_date(self, models: str) -> pd.Timestamp | None:
        """The latest date forecast by ``models`` (a ``models_key``), None before the first."""
        frame = self.read()
        made = frame.loc[frame["models"] == models, "date"]
        return None if made.empty else pd.Timestamp(made.max())

    def append(self, rows: pd.DataFrame) -> int:
        """Add ``rows`` (dates the log does not hold for their models); the number of rows added."""
        if rows.empty:
            return 0
        old = self.read()
        clash = old.merge(rows[["date", "symbol", "horizon", "models"]], on=["date", "symbol", "horizon", "models"])
        if not clash.empty:
            raise ValueError(f"{self.path}: already holds forecasts for {clash['date'].min().date()} by these models")
        combined = rows if old.empty else pd.concat([old, rows], ignore_index=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        combined[list(COLUMNS)].to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
        return len(rows)
