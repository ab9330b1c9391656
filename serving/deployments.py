"""The model-holding deployments, as plain classes (``builder`` makes them Serve deployments;
tests and offline use run them in-process):

- ``Ensemble``: production forecasters; per-date forecasts batched (``Batcher``) and
  cached (they depend on market data only).
- ``Allocator``: the production PPO or SAC policy (placement "deployments").
- ``RiskFilter``: the risk filters and portfolio risk (placement "deployments"); house limits
  come in ``user_config`` and can change while it runs.

Each follows the feature store as it is appended to (its ``DataWatch``): the same model versions
rebuilt on the new panel, swapped in at once; a date it does not have yet is loaded before the
request that names it is answered.

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
from rayfolio.serving.data_watch import DataWatch
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


def load_allocator(
    settings: ServeSettings, panel: Panel, versions: dict[str, str] | None = None
) -> tuple[Proposer, dict[str, str]]:
    """The production allocator (verified; ``best``: the best validation Sharpe) and {name: version};
    ``versions`` ({name: version}, one): that one instead (the served one, on a new store version)."""
    registry = ModelRegistry(settings.registry)
    if versions:
        ((name, version),) = versions.items()
        return load_proposer(registry, name, panel, settings.splits, version=version)
    return load_proposer(registry, settings.allocator, panel, settings.splits)


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


def reload_models(watch: DataWatch, load: Callable[[], None], versions: Callable[[], dict], registry: Path) -> dict:
    """A model reload (``POST /v1/models/reload``): the store's newest version first, then
    ``load`` (the production versions, on the watch's panel) as ``try_reload`` runs it."""
    watch.refresh()
    with watch.lock:  # never between a data switch's load and its swap
        return try_reload(load, versions, registry)


class Ensemble:
    def __init__(self, settings: dict) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.metrics = ServiceMetrics()
        self.watch = DataWatch(s.store, s.data_poll_s, lambda panel: self._load(panel, self.model_versions), "Ensemble")
        # Experiments' ensembles, {sorted overrides: (their forecasts, {model: version})}: loaded by
        # ``variant`` and rebuilt with the production ensemble on a new store version.
        self.variants: dict[tuple, tuple[LocalForecasts, dict[str, str]]] = {}
        self._load(self.watch.panel)

        self._batched = Batcher(self._forecast_many, max_size=16, wait_s=0.002)  # concurrent callers, one pass

    def _ensemble(self, panel: Panel, versions: dict[str, str] | None) -> tuple[LocalForecasts, dict[str, str]]:
        forecasters = load_forecasters(ModelRegistry(self.settings.registry), panel, versions=versions,
                                       runtime=self.settings.forecaster_runtime)  # fmt: skip
        forecasts = LocalForecasts(ForecastEnsemble(forecasters, panel, validation_dates(self.settings, panel)))
        return forecasts, {f.name: f.version for f in forecasters}

    def _load(self, panel: Panel, versions: dict[str, str] | None = None) -> None:
        """The forecasters (production, or ``versions``) on ``panel``, verified; swapped in only
        once all have loaded (one reference: a batch in flight keeps the one it started with)."""
        forecasts, model_versions = self._ensemble(panel, versions)
        variants = {key: self._ensemble(panel, served) for key, (_, served) in self.variants.items()}
        self.forecasts, self.model_versions, self.variants = forecasts, model_versions, variants
        self.metrics.versions(self.model_versions)

    def variant(self, overrides: dict[str, str]) -> dict[str, str]:
        """Load (verified) the ensemble with ``overrides`` ({forecaster: version}) in place of the
        production versions, for an experiment's arm; its {model: version}. Raises when a version
        does not verify or is not a served forecaster."""
        key = tuple(sorted(overrides.items()))
        if key not in self.variants:
            unknown = sorted(set(overrides) - set(self.model_versions))
            if unknown:
                raise ValueError(f"{', '.join(unknown)} is not a forecaster served here")
            self.variants[key] = self._ensemble(self.watch.panel, {**self.model_versions, **overrides})
        return self.variants[key][1]

    def reload(self) -> dict:
        """Load the store's newest version and the registry's production versions now; on any
        error keep serving the loaded ones."""
        return reload_models(self.watch, lambda: self._load(self.watch.panel), lambda: self.model_versions,
                             self.settings.registry)  # fmt: skip

    def info(self) -> dict:
        self.watch.poll()
        return {"versions": self.model_versions, "min_history": self.forecasts.ensemble.min_history,
                "data": self.watch.describe()}  # fmt: skip

    async def forecast(self, t: int, overrides: dict[str, str] | None = None) -> EnsembleForecast:
        await self.watch.until(t)
        if overrides:
            forecasts = self.variants.get(tuple(sorted(overrides.items())))
            if forecasts is None:
                self.variant(overrides)
                forecasts = self.variants[tuple(sorted(overrides.items()))]
            return forecasts[0].get_now([t])[0]
        return await self._batched(t)

    async def _forecast_many(self, ts: list[int]) -> list[EnsembleForecast]:
        forecasts = self.forecasts  # read once: a switch mid-batch does not split it
        cache = forecasts.cache
        hits, misses = cache.hits, cache.misses
        out = forecasts.get_now(ts)
        self.metrics.cache_lookups(cache.hits - hits, cache.misses - misses, "ensemble")
        return out


class Allocator:
    def __init__(self, settings: dict) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.watch = DataWatch(s.store, s.data_poll_s, lambda panel: self._load(panel, self.model_versions),
                               "Allocator")  # fmt: skip
        self._load(self.watch.panel)

    def _load(self, panel: Panel, versions: dict[str, str] | None = None) -> None:
        self.proposer, self.model_versions = load_allocator(self.settings, panel, versions)
        ServiceMetrics().versions(self.model_versions)

    def reload(self) -> dict:
        return reload_models(self.watch, lambda: self._load(self.watch.panel), lambda: self.model_versions,
                             self.settings.registry)  # fmt: skip

    def info(self) -> dict:
        self.watch.poll()
        return {"versions": self.model_versions, "min_history": self.proposer.min_history,
                "data": self.watch.describe()}  # fmt: skip

    async def propose_many(self, ts: list[int], currents: list[np.ndarray], forecasts: list) -> list[np.ndarray]:
        """A batch of (date, current weights, the date's forecast) -> proposed weights, one policy pass."""
        await self.watch.until(max(ts))
        return self.proposer.propose_many(ts, currents, forecasts)


class RiskFilter:
    def __init__(self, settings: dict) -> None:
        s = ServeSettings.model_validate(settings)
        self.watch = DataWatch(s.store, s.data_poll_s, self._use, "RiskFilter")
        self._use(self.watch.panel)
        self.limits = s.house_limits

    def _use(self, panel: Panel) -> None:
        self.market = Market(panel, 1)

    def reload(self) -> dict:
        """Nothing registered to reload here; the store's newest version, at once."""
        self.watch.refresh()
        return {"versions": {}, "error": None}

    def reconfigure(self, user_config: dict) -> None:
        """House limits, live: ``serve deploy`` with a new ``user_config`` applies them without a restart."""
        self.limits = HouseLimits.model_validate(user_config)

    def info(self) -> dict:
        self.watch.poll()
        return {"versions": {}, "limits": self.limits.model_dump(), "data": self.watch.describe()}

    async def apply_many(self, items: list[tuple[int, np.ndarray, np.ndarray, dict]]) -> list[Decided]:
        """(date, proposal, current, risk profile) -> (weights, checks, portfolio risk), for a batch."""
        await self.watch.until(max(t for t, *_ in items))
        market = self.market
        return [filter_and_measure(market, t, proposal, current, RiskProfileIn.model_validate(profile), self.limits)
                for t, proposal, current, profile in items]  # fmt: skip
