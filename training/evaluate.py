"""Out-of-sample forecasts as one long table, and the metrics table per model,
horizon and split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rayfolio.training.metrics import evaluate_forecast
from rayfolio.training.panel import Panel


def forecast_frame(panel: Panel, t: np.ndarray, scores: np.ndarray, model: str, split: str) -> pd.DataFrame:
    """Scores (len(t), N, H) -> rows (date, symbol, horizon, model, split, forecast),
    only where the asset traded that day."""
    dates = np.repeat(panel.dates[t], len(panel.symbols) * len(panel.horizons))
    symbols = np.tile(np.repeat(panel.symbols, len(panel.horizons)), len(t))
    horizons = np.tile(np.asarray(panel.horizons), len(t) * len(panel.symbols))
    traded = np.isfinite(panel.features[t][..., 0]).repeat(len(panel.horizons), axis=-1).reshape(-1)
    frame = pd.DataFrame(
        {"date": dates, "symbol": symbols, "horizon": horizons, "model": model, "split": split,
         "forecast": scores.reshape(-1).astype(np.float64)}
    )  # fmt: skip
    return frame[traded].reset_index(drop=True)


def metrics_table(
    panel: Panel, forecasts: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], cost_bps: float
) -> pd.DataFrame:
    """``forecasts[model][split] = (t, scores)`` -> one row per model, horizon and split."""
    rows = []
    for model, splits in forecasts.items():
        for split, (t, scores) in splits.items():
            for h, horizon in enumerate(panel.horizons):
                m = evaluate_forecast(scores[..., h], panel.labels[t][..., h], panel.next_returns[t], cost_bps)
                rows.append({"model": model, "horizon": horizon, "split": split, **m.as_dict()})
    return pd.DataFrame(rows)
