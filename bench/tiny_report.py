"""A tiny run's backtest output beside the tiny served market (bench/tiny_market.py), written by the
project's own code: what the console's backtest page and the report routes (serving/reports.py)
read. No training: the baselines are backtested, and the forecasts are the tiny registered
forecaster's own scores over the validation and test splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.tiny_market import ENV, SPLITS
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore
from rayfolio.rl.backtest import run_backtest
from rayfolio.rl.baselines import EqualWeight, hierarchical_risk_parity, minimum_variance
from rayfolio.rl.config import BacktestConfig
from rayfolio.rl.market import MarketData
from rayfolio.rl.report import write_backtest
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import load_forecasters, split_indices
from rayfolio.training.evaluate import forecast_frame
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry

COST_BPS = 10.0


def write_tiny_run(settings: ServeSettings) -> Path:
    """metrics.json, returns.parquet, weights.parquet, plots/ and forecasts.parquet in
    ``settings.report_dir``, as `rayfolio run` writes them; returns the directory."""
    out = settings.report_dir
    panel = Panel.from_store(FeatureStore(settings.store))
    splitter = PurgedDateSplitter(SPLITS, purge=60)
    market = MarketData.from_panel(panel, splitter, ENV)
    k = ENV.rebalance_every
    allocators = [EqualWeight(market, k), minimum_variance(market, k, 60), hierarchical_risk_parity(market, k, 60)]
    runs = run_backtest(allocators, market, market.splits["test"], k, COST_BPS)
    write_backtest(runs, BacktestConfig(bootstrap_samples=200), out)
    frames = []
    for forecaster in load_forecasters(ModelRegistry(settings.registry), panel):
        family = forecaster.name.removesuffix("-forecaster")  # the walk-forward's model column: the family
        for split in ("validation", "test"):
            t = split_indices(panel, splitter, split)
            scores = np.stack([forecaster.scores(int(i)) for i in t])
            frames.append(forecast_frame(panel, t, scores, family, split))
    pd.concat(frames, ignore_index=True).to_parquet(out / "forecasts.parquet", index=False)
    return out
