"""What the HTTP routes call: the recommendation pipeline once every model is loaded, the
ensemble's forecasts, explanations, the registry and reloads, in one ingress replica.

The deployments it talks to are Serve handles in a replica, or ``LocalHandle``s around the
same classes in this process (tests, the in-process app): ``await handle.method.remote(...)``
either way, so the service has one implementation.

The service follows the feature store as it is appended to (``DataWatch``): a new store
version becomes a new market (and, placement "ingress", the same policy on the new panel) in a
new pipeline, swapped in at once; requests in flight finish on the one they started with.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

from rayfolio.serving.allocator import Proposer
from rayfolio.serving.audit import AuditLog
from rayfolio.serving.data_watch import DataWatch
from rayfolio.serving.deployments import load_allocator, reload_models
from rayfolio.serving.errors import RequestError
from rayfolio.serving.experiments import ExperimentConfig, conclusion_id
from rayfolio.serving.market import Market
from rayfolio.serving.metrics import ServiceMetrics
from rayfolio.serving.pipeline import (
    Arm,
    DeploymentDecisions,
    DeploymentForecasts,
    LiveExperiment,
    LocalDecisions,
    RecommendationPipeline,
)
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import EnsembleForecast
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError

logger = logging.getLogger(__name__)


class LocalHandle:
    """An object in this process, called the way a DeploymentHandle is: ``await h.method.remote(...)``."""

    def __init__(self, target: object) -> None:
        self.target = target

    def __getattr__(self, name: str):
        method = getattr(self.target, name)

        async def call(*args, **kwargs):
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return type(name, (), {"remote": staticmethod(call)})


class RecommendationService:
    def __init__(self, settings: ServeSettings, ensemble, explainer, allocator=None, risk_filter=None) -> None:
        """``allocator`` and ``risk_filter``: handles with placement "deployments"; None with
        placement "ingress" (the policy and the risk filters run here)."""
        self.settings = s = settings
        self.ensemble, self.explainer, self.allocator, self.risk_filter = ensemble, explainer, allocator, risk_filter
        self.audit = AuditLog(s.audit_url)
        self.registry = ModelRegistry(s.registry)
        self.metrics = ServiceMetrics()
        self.watch = DataWatch(s.store, s.data_poll_s, self._use_data, "ingress")
        # The panel and the policy that runs here (placement "ingress") on it: swapped together.
        self.local: tuple[Panel, Proposer | None] = (self.watch.panel, None)
        self.local_versions: dict[str, str] = {}
        if allocator is None:
            proposer, self.local_versions = load_allocator(s, self.watch.panel)
            self.local = (self.watch.panel, proposer)
            self.metrics.versions(self.local_versions)
        self.limits = s.house_limits
        # Kept across store versions: a date's forecast depends on data dated <= it, which an append never changes.
        self.forecasts = DeploymentForecasts(ensemble)
        self.pipeline: RecommendationPipeline | None = None
        self.model_versions: dict[str, str] = {}
        self.forecaster_versions: dict[str, str] = {}
        self.min_history = 1  # the most history any served model needs (known once ready)
        # The experiment (A/B, canary) from the ingress's user_config: both arms loaded and verified
        # before it serves; one that cannot be served is refused and what served before keeps serving.
        self.experiment: LiveExperiment | None = None
        self.experiment_config: ExperimentConfig | None = None  # as configured (maybe refused)
        self.experiment_refused: str | None = None
        self._conclusion_checked = 0.0

    @property
    def proposer(self) -> Proposer | None:
        return self.local[1]

    @property
    def _remote(self) -> list:
        """The deployments whose models this service serves (and reloads)."""
        return [self.ensemble, self.explainer] + ([] if self.proposer is not None else [self.allocator])

    async def ready(self) -> RecommendationPipeline:
        """The pipeline, once every deployment has loaded and verified its models. Each call
        also polls the store for a new version (a clock compare; the check runs in a thread)."""
        self.watch.poll()
        if self.pipeline is None:
            remote = self._remote + ([] if self.proposer is not None else [self.risk_filter])
            infos = list(await asyncio.gather(*(d.info.remote() for d in remote)))
            if self.proposer is not None:
                infos.append({"versions": self.local_versions, "min_history": self.proposer.min_history})
            self.model_versions = {k: v for info in infos for k, v in info["versions"].items()}
            self.forecaster_versions = infos[0]["versions"]  # the Ensemble's (first in ``_remote``)
            self.min_history = max(info.get("min_history", 1) for info in infos)
            self.pipeline = self._pipeline(*self.local)
        self._check_conclusion()
        return self.pipeline

    def _pipeline(self, panel: Panel, proposer: Proposer | None) -> RecommendationPipeline:
        market = Market(panel, self.min_history)
        pipeline = RecommendationPipeline(market, self.forecasts, self._decisions(market, proposer), self.audit,
                                          self.model_versions, self.limits)  # fmt: skip
        pipeline.experiment, pipeline.observe_arm = self.experiment, self.metrics.arm
        return pipeline

    def _decisions(self, market: Market, proposer: Proposer | None) -> LocalDecisions | DeploymentDecisions:
        if proposer is not None:
            return LocalDecisions(proposer, market, self.limits)
        return DeploymentDecisions(self.allocator, self.risk_filter)

    # ----- experiments ---------------------------------------------------------------------------

    async def set_experiment(self, config: ExperimentConfig | None) -> None:
        """Serve ``config`` (None: no experiment) once both arms have loaded and verified. One that
        cannot be served (a version that does not verify, a model not served here) is refused with
        its reason (``experiment_info``) and what served before keeps serving: no request fails."""
        self.experiment_config = config
        if config is None:
            self._use_experiment(None)
            self.experiment_refused = None
            return
        try:
            await self.ready()
            live = await self._load_experiment(config, self.local[0])
        except Exception as err:  # whatever stops a load (checksums, a missing version): keep serving
            self.experiment_refused = str(err).replace(str(self.settings.registry), "<registry>")
            logger.warning("experiment %s refused, still serving %s: %s", config.name,
                           self.experiment.config.name if self.experiment else "no experiment",
                           self.experiment_refused)  # fmt: skip
            return
        self.experiment_refused = None
        self._use_experiment(live)
        self._conclusion_checked = 0.0
        self._check_conclusion()

    def _use_experiment(self, live: LiveExperiment | None) -> None:
        self.experiment = live
        if self.pipeline is not None:
            self.pipeline.experiment = live

    async def _load_experiment(self, config: ExperimentConfig, panel: Panel) -> LiveExperiment:
        model, served = config.model, self.model_versions
        if model not in served:
            raise RequestError("experiment_refused", f"{model} is not served here (served: {', '.join(served)})")
        arms = {}
        for arm, version in (("control", config.control), ("candidate", config.candidate)):
            versions = {**served, model: version}
            if versions == served:  # the production version: the pipeline's own forecasts and decisions
                await asyncio.to_thread(self.registry.get, model, version)  # (verified, like any arm)
                arms[arm] = Arm(version, None, None, versions)
            elif model in self.local_versions:  # the allocator, run here: its two versions side by side
                proposer, _ = await asyncio.to_thread(load_allocator, self.settings, panel, {model: version})
                arms[arm] = Arm(version, None, self._decisions(Market(panel, self.min_history), proposer), versions)
            elif model in self.forecaster_versions:  # the Ensemble deployment loads (and verifies) the variant
                await self.ensemble.variant.remote({model: version})
                arms[arm] = Arm(version, DeploymentForecasts(self.ensemble, overrides={model: version}), None, versions)
            else:
                why = "experiments on the allocator need placement 'ingress' (here it runs in the Allocator deployment)"
                raise RequestError("experiment_refused", f"{model}: {why}")
        return LiveExperiment(config, arms["control"], arms["candidate"], self._concluded(config))

    def _concluded(self, config: ExperimentConfig) -> str | None:
        record = self.audit.get(conclusion_id(config.name))
        return None if record is None else record.payload["action"]

    def _check_conclusion(self) -> None:
        """A promotion or stop recorded (by any replica, or the CLI) ends the experiment here too:
        checked at most every ``data_poll_s``."""
        live = self.experiment
        if live is None or live.concluded is not None:
            return
        now = time.monotonic()
        if now - self._conclusion_checked < self.settings.data_poll_s:
            return
        self._conclusion_checked = now
        concluded = self._concluded(live.config)
        if concluded is not None:
            self._use_experiment(LiveExperiment(live.config, live.control, live.candidate, concluded))

    def concluded_now(self) -> None:
        """A conclusion was just recorded here: look for it now rather than within ``data_poll_s``."""
        self._conclusion_checked = 0.0
        self._check_conclusion()

    def experiment_info(self) -> dict:
        live = self.experiment
        return {
            "configured": None if self.experiment_config is None else self.experiment_config.model_dump(),
            "serving": None if live is None else {**live.config.model_dump(), "concluded": live.concluded},
            "refused": self.experiment_refused,
        }

    def _use_data(self, panel: Panel) -> None:
        """A new store version (in the watch's thread): the served policy on it, then one swap."""
        proposer = None
        if self.proposer is not None:
            proposer, _ = load_allocator(self.settings, panel, self.local_versions)
        if self.experiment is not None and self.experiment.config.model in self.local_versions:
            self.experiment = self._experiment_on(panel, self.experiment)
        pipeline = self._pipeline(panel, proposer) if self.pipeline is not None else None
        self.local = (panel, proposer)
        if self.pipeline is not None:  # (built by ``ready`` meanwhile: on the old panel, maybe)
            self.pipeline = pipeline or self._pipeline(panel, proposer)

    def _experiment_on(self, panel: Panel, live: LiveExperiment) -> LiveExperiment:
        """An allocator experiment's two policies on a new store version (in the watch's thread)."""
        arms = []
        for arm in (live.control, live.candidate):
            proposer, _ = load_allocator(self.settings, panel, {live.config.model: arm.version})
            arms.append(Arm(arm.version, arm.forecasts, self._decisions(Market(panel, self.min_history), proposer),
                            arm.model_versions))  # fmt: skip
        return LiveExperiment(live.config, *arms, live.concluded)

    def data(self) -> dict:
        """The store version and last date this replica serves, and how long its last switch took."""
        return self.watch.describe() | ({"switch_s": round(self.watch.reload_s, 3)} if self.watch.reload_s else {})

    def set_limits(self, limits: HouseLimits) -> None:
        """House limits, live, for the risk filters that run here (placement "ingress")."""
        self.limits = limits
        if self.pipeline is not None:
            self.pipeline.limits = limits
            if isinstance(self.pipeline.decisions, LocalDecisions):
                self.pipeline.decisions.limits = limits
        if self.experiment is not None:
            for arm in (self.experiment.control, self.experiment.candidate):
                if isinstance(arm.decisions, LocalDecisions):
                    arm.decisions.limits = limits

    async def forecast(self, t: int) -> EnsembleForecast:
        cache = self.forecasts.cache
        hits, misses = cache.hits, cache.misses
        forecasts = await self.forecasts.get([t])
        self.metrics.cache_lookups(cache.hits - hits, cache.misses - misses, "ingress")
        return forecasts[t]

    async def explain(self, t, current, horizon: int, target=None) -> dict:
        """``target``: the recommendation's target weights (N+1) when known (which assets it trades)."""
        out = await self.explainer.explain.remote(t, current, horizon, target)
        self.metrics.explanations.inc()
        return out

    async def reload(self) -> dict[str, str]:
        """Every deployment loads the store's newest version and the registry's production versions,
        verified, then swaps them in; one that cannot (a checksum that does not match, a missing
        file) keeps what it serves. Requests never wait for this, nor fail because of it."""
        others = [] if self.proposer is not None else [self.risk_filter]  # data only: no models of its own
        results = list(await asyncio.gather(*(d.reload.remote() for d in self._remote + others)))
        if self.proposer is not None:
            results.append(await asyncio.to_thread(reload_models, self.watch, self._load_local,
                                                   lambda: self.local_versions, self.settings.registry))  # fmt: skip
        else:
            await asyncio.to_thread(self.watch.refresh)
        before = self.model_versions
        self.model_versions = {k: v for r in results for k, v in r["versions"].items()}
        if self.pipeline is not None:
            self.pipeline.model_versions = self.model_versions
        if self.model_versions != before:
            self.forecasts.cache.clear()  # forecasts of the models served before
            if self.experiment_config is not None:  # its arms, again on the new production versions
                await self.set_experiment(self.experiment_config)
        refused = sorted({r["error"] for r in results if r["error"]})
        if refused:
            raise RequestError("reload_refused", f"{'; '.join(refused)}; still serving {self.model_versions}", 409)
        return self.model_versions

    def _load_local(self) -> None:
        panel = self.watch.panel
        proposer, self.local_versions = load_allocator(self.settings, panel)
        self.local = (panel, proposer)
        if self.pipeline is not None and isinstance(self.pipeline.decisions, LocalDecisions):
            self.pipeline.decisions.proposer = proposer
        self.metrics.versions(self.local_versions)

    def model_card(self, name: str) -> dict:
        """A registered model's stages and versions, each verified."""
        stages = {s: self.registry.stage_version(name, s) for s in ("production", "staging")}
        versions = []
        for v in self.registry.versions(name):
            try:
                info = self.registry.get(name, v)
                metrics = {k: m for k, m in info.metrics.items() if not isinstance(m, list)}
                versions.append({"version": v, "created_at": info.manifest["created_at"], "verified": True,
                                 "metrics": metrics})  # fmt: skip
            except RegistryError:
                versions.append({"version": v, "verified": False})
        return {"name": name, "stages": stages, "versions": versions}

    def stage(self, name: str, action: str, version: str | None, stage: str) -> dict:
        """Promote a version to ``stage`` or roll the stage back (admin)."""
        try:
            if action == "promote":
                if version is None:
                    raise RequestError("invalid_request", "promote needs ?version=")
                self.registry.promote(name, version, stage)
            else:
                self.registry.rollback(name, stage)
        except RegistryError as err:
            raise RequestError("registry", str(err).replace(str(self.registry.root), "<registry>")) from None
        return self.model_card(name)
