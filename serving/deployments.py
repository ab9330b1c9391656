"""The model-holding deployments, as plain classes (``builder`` makes them Serve deployments;
tests and offline use run them in-process):

- ``Ensemble``: production forecasters; per-date forecasts batched (``Batcher``) and
  cached (they depend on market data only).
- ``Allocator``: the production PPO or SAC policy (placement "deployments").
- ``RiskFilter``: the risk filters and portfolio risk (placement "deployments"); house limits
  come in ``user_config`` and can change while it runs.

The ``Explainer`` has its own module (explainer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.data.store import FeatureStore
from rayfolio.serving.allocator import Proposer, load_proposer
from rayfolio.serving.batching import Batcher
from rayfolio.serving.market import Market
from rayfolio.serving.metrics import ServiceMetrics
from rayfolio.serving.pipeline import Decided, LocalForecasts, filter_and_measure
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.schemas import RiskProfileIn
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import EnsembleForecast, ForecastEnsemble, load_forecasters, split_indices
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry

logger = logging.getLogger(__name__)


def load_panel(settings: ServeSettings) -> Panel:
    store = FeatureStore(settings.store)
    store.verify()
    return Panel.from_store(store)


def load_allocator(settings: ServeSettings, panel: Panel) -> tuple[Proposer, dict[str, str]]:
    """The production allocator (verified; ``best``: the best validation Sharpe) and {name: version}."""
    return load_proposer(ModelRegistry(settings.registry), settings.allocator, panel, settings.splits)


def validation_dates(settings: ServeSettings, panel: Panel) -> np.ndarray:
    """The validation date indices the ensemble's confidence is calibrated on: the production
    forecasters' own (their card's calendar: the last walk-forward refit's window, as the backtest's
    replay calibrates it), else the run's splits."""
    production = ModelRegistry(settings.registry).production("forecaster")
    if production:
        calendar = production[-1].card.calendar
        return split_indices(panel, PurgedDateSplitter(calendar.splits, purge=calendar.purge), "validation")
    return split_indices(panel, PurgedDateSplitter(settings.splits, purge=max(panel.horizons)), "validation")


def try_reload(load: Callable[[], None], versions: Callable[[], dict], registry: Path) -> dict:
    """Run ``load`` (which swaps new models in only once all have loaded and verified); the
    versions served afterwards and, when it was refused, why (registry paths hidden)."""
    try:
        load()
    except Exception as err:  # whatever stops a load (checksums, weights_only refusing code): serve on
        logger.warning("reload refused, still serving the loaded models: %s", err)
        return {"versions": versions(), "error": str(err).replace(str(registry), "<registry>")}
    return {"versions": versions(), "error": None}


class Ensemble:
    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.panel = load_panel(self.settings)
        self.metrics = ServiceMetrics()
        self._load()

        self._batched = Batcher(self._forecast_many, max_size=16, wait_s=0.002)  # concurrent callers, one pass

    def _load(self) -> None:
        """The production forecasters, verified; swapped in only once all have loaded."""
        forecasters = load_forecasters(ModelRegistry(self.settings.registry), self.panel)
        forecasts = LocalForecasts(
            ForecastEnsemble(forecasters, self.panel, validation_dates(self.settings, self.panel))
        )
        self.forecasts, self.model_versions = forecasts, {f.name: f.version for f in forecasters}
        self.metrics.versions(self.model_versions)

    def reload(self) -> dict:
        """Load the registry's production versions now; on any error keep serving the loaded ones."""
        return try_reload(self._load, lambda: self.model_versions, self.settings.registry)

    def info(self) -> dict:
        return {"versions": self.model_versions, "min_history": self.forecasts.ensemble.min_history}

    async def forecast(self, t: int) -> EnsembleForecast:
        return await self._batched(t)

    async def _forecast_many(self, ts: list[int]) -> list[EnsembleForecast]:
        cache = self.forecasts.cache
        hits, misses = cache.hits, cache.misses
        out = self.forecasts.get_now(ts)
        self.metrics.cache_lookups(cache.hits - hits, cache.misses - misses, "ensemble")
        return out


class Allocator:
    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.panel = load_panel(self.settings)
        self._load()

    def _load(self) -> None:
        self.proposer, self.model_versions = load_allocator(self.settings, self.panel)
        ServiceMetrics().versions(self.model_versions)

    def reload(self) -> dict:
        return try_reload(self._load, lambda: self.model_versions, self.settings.registry)

    def info(self) -> dict:
        return {"versions": self.model_versions, "min_history": self.proposer.min_history}

    def propose_many(self, ts: list[int], currents: list[np.ndarray], forecasts: list) -> list[np.ndarray]:
        """A batch of (date, current weights, the date's forecast) -> proposed weights, one policy pass."""
        return self.proposer.propose_many(ts, currents, forecasts)


class RiskFilter:
    def __init__(self, settings: dict) -> None:
        s = ServeSettings.model_validate(settings)
        self.market = Market(load_panel(s), 1)
        self.limits = s.house_limits

    def reconfigure(self, user_config: dict) -> None:
        """House limits, live: ``serve deploy`` with a new ``user_config`` applies them without a restart."""
        self.limits = HouseLimits.model_validate(user_config)

    def info(self) -> dict:
        return {"versions": {}, "limits": self.limits.model_dump()}

    def apply_many(self, items: list[tuple[int, np.ndarray, np.ndarray, dict]]) -> list[Decided]:
        """(date, proposal, current, risk profile) -> (weights, checks, portfolio risk), for a batch."""
        return [filter_and_measure(self.market, t, proposal, current, RiskProfileIn.model_validate(profile),
                                   self.limits) for t, proposal, current, profile in items]  # fmt: skip
