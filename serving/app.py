"""The Ray Serve application: FastAPI ingress -> ensemble, allocator, risk filters.

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations
at runtime, after Serve has moved the routes onto its own class.)

Deployments (each with its own autoscaling config, composed in ``build_app``):
- ``Ensemble``: production forecasters; per-date forecasts batched with
  ``@serve.batch`` and cached (they depend on market data only).
- ``Allocator``: the production PPO or SAC policy.
- ``RiskFilter``: the risk filters and portfolio risk; house limits come in
  ``user_config`` and can change while it runs.
- ``Explainer``: SHAP attributions and rationales, in replicas of their own.
- ``Ingress``: the HTTP API, auth, rate limits, body limits, the audit log.

Every handle hop costs milliseconds of CPU here (DESIGN.md). The ensemble's
per-date forecasts are kept in the ingress after their first fetch; the policy
and the risk filters run either in the ingress (``placement="ingress"``, the
default: no hop for a cached date) or in their own deployments
(``placement="deployments"``: one allocator call and one risk-filter call per
batch of concurrent requests). Either way one audit transaction per batch.
"""

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.config import BackpressureConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import AuditLog, key_id
from rayfolio.serving.auth import ApiKey, RateLimiter, find_key, load_api_keys
from rayfolio.serving.engine import (
    ForecastCache,
    Market,
    RequestError,
    audit_recommendations,
    build_response,
    filter_and_measure,
    idempotency_conflict,
    request_id_for,
)
from rayfolio.serving.metrics import ServiceMetrics
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.schemas import (
    ErrorBody,
    ErrorResponse,
    ExplanationRequest,
    RecommendationRequest,
    RecommendationResponse,
    RiskProfileIn,
)
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry, RegistryError

logger = logging.getLogger("rayfolio.serving")


class Autoscaling(BaseModel):
    """One deployment's replicas: autoscaling bounds and CPU share. Fractional CPUs
    let the whole app (at its maximum) fit a 2-core machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)
    num_cpus: float = Field(0.25, gt=0)
    # How often the controller checks each replica: a dead one is noticed and replaced within
    # about this long (Serve's default, 10 s, leaves a crashed replica unreplaced for longer).
    health_check_period_s: float = Field(2.0, gt=0)

    def options(self, max_ongoing_requests: int, **actor_options) -> dict:
        return {
            "autoscaling_config": self.model_dump(exclude={"num_cpus", "health_check_period_s"}),
            "health_check_period_s": self.health_check_period_s,
            "max_ongoing_requests": max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, **actor_options},
        }


class ServeSettings(BaseModel):
    """What the application loads and how it guards itself; plain values (shipped to every replica)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Path
    registry: Path
    splits: SplitConfig
    audit_url: str
    allocator: str = "ppo-allocator"
    # Where the policy and the risk filters run for a recommendation. "ingress": in the
    # ingress replica, so a date whose forecasts are cached costs no handle hop (each hop
    # costs ~5 ms of CPU on this 2-core machine; bench/serve_load.py measures both).
    # "deployments": in the Allocator and RiskFilter deployments, each scaled on its own
    # (e.g. a large policy on GPU workers of a cluster).
    placement: Literal["ingress", "deployments"] = "ingress"
    house_limits: HouseLimits = HouseLimits()
    rate_per_key: float = Field(50.0, gt=0)  # requests per second per key, per ingress replica
    burst_per_key: int = Field(100, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    # Load shedding: requests beyond the ingress replicas' concurrency wait in Serve's queue up to
    # this many; more get 503 with Retry-After at once, instead of everyone timing out. Small on
    # purpose (bench/serve_overload.py, 4x the capacity: 8 and 8 shed in p50 0.55 s and were back
    # in 0.65 s; 64 and 32 took 3.6 s to shed and 11.9 s to recover, Serve's Python proxy queueing).
    ingress_max_ongoing: int = Field(8, ge=1)  # requests inside one ingress replica at once
    max_queued_requests: int = Field(8, ge=1)
    retry_after_s: float = Field(1.0, gt=0)
    insecure_dev: bool = False  # no keys: every request is an anonymous admin (local dev only)
    ingress: Autoscaling = Autoscaling(max_replicas=2)
    ensemble: Autoscaling = Autoscaling(num_cpus=0.5)
    allocator_scaling: Autoscaling = Autoscaling(max_replicas=2)
    risk_filter: Autoscaling = Autoscaling()
    explainer: Autoscaling = Autoscaling(num_cpus=0.25)
    explain_samples: int = Field(100, ge=10)  # expected-gradient samples per explanation
    explain_background: int = Field(16, ge=2)  # training dates in the SHAP background


def _panel(settings: ServeSettings) -> Panel:
    store = FeatureStore(settings.store)
    store.verify()
    return Panel.from_store(store)


def _load_allocator(settings: ServeSettings, panel: Panel) -> tuple:
    """The production allocator (verified) and {name: version}."""
    from rayfolio.rl.load import load_agent

    splitter = PurgedDateSplitter(settings.splits, purge=max(panel.horizons))
    agent, version = load_agent(ModelRegistry(settings.registry), settings.allocator, panel, splitter,
                                whole_panel=True)  # fmt: skip
    return agent, {settings.allocator: version}


def _reload(load, versions, registry: Path) -> dict:
    """Run ``load`` (which swaps new models in only once all have loaded and verified); the
    versions served afterwards and, when it was refused, why (registry paths hidden)."""
    try:
        load()
    except Exception as err:  # whatever stops a load (checksums, weights_only refusing code): serve on
        logger.warning("reload refused, still serving the loaded models: %s", err)
        return {"versions": versions(), "error": str(err).replace(str(registry), "<registry>")}
    return {"versions": versions(), "error": None}


@serve.deployment(name="Ensemble")
class EnsembleDeployment:
    def __init__(self, settings: dict) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.panel = _panel(s)
        self.metrics = ServiceMetrics()
        self._load()

    def _load(self) -> None:
        """The production forecasters, verified; swapped in only once all have loaded."""
        forecasters = load_forecasters(ModelRegistry(self.settings.registry), self.panel)
        cache = ForecastCache(ForecastEnsemble(forecasters, self.panel))
        self.cache, self.model_versions = cache, {f.name: f.version for f in forecasters}
        self.min_history = cache.ensemble.min_history
        self.metrics.versions(self.model_versions)

    def reload(self) -> dict:
        """Load the registry's production versions now; on any error keep serving the loaded ones."""
        return _reload(self._load, lambda: self.model_versions, self.settings.registry)

    def info(self) -> dict:
        return {"versions": self.model_versions, "min_history": self.min_history}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def forecast(self, ts: list[int]) -> list:
        hits, misses = self.cache.hits, self.cache.misses
        out = self.cache.get_many(ts)
        self.metrics.cache_lookups(self.cache.hits - hits, self.cache.misses - misses, "ensemble")
        return out


@serve.deployment(name="Allocator")
class AllocatorDeployment:
    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.panel = _panel(self.settings)
        self._load()

    def _load(self) -> None:
        self.agent, self.model_versions = _load_allocator(self.settings, self.panel)
        ServiceMetrics().versions(self.model_versions)

    def reload(self) -> dict:
        return _reload(self._load, lambda: self.model_versions, self.settings.registry)

    def info(self) -> dict:
        return {"versions": self.model_versions, "min_history": self.agent.env.window}

    def propose_many(self, ts: list[int], currents: list[np.ndarray]) -> list[np.ndarray]:
        """A batch of (date, current weights) -> target weights, one policy forward pass."""
        return self.agent.decide_many(ts, currents)


@serve.deployment(name="RiskFilter")
class RiskFilterDeployment:
    def __init__(self, settings: dict) -> None:
        s = ServeSettings.model_validate(settings)
        self.market = Market(_panel(s), 1)
        self.limits = s.house_limits

    def reconfigure(self, user_config: dict) -> None:
        """House limits, live: ``serve deploy`` with a new ``user_config`` applies them without a restart."""
        self.limits = HouseLimits.model_validate(user_config)

    def info(self) -> dict:
        return {"versions": {}, "limits": self.limits.model_dump()}

    def apply_many(self, items: list[tuple[int, np.ndarray, np.ndarray, dict]]) -> list[tuple]:
        """(date, proposal, current, risk profile) -> (weights, checks, portfolio risk), for a batch."""
        return [filter_and_measure(self.market, t, proposal, current, RiskProfileIn.model_validate(profile),
                                   self.limits) for t, proposal, current, profile in items]  # fmt: skip


@serve.deployment(name="Explainer")
class ExplainerDeployment:
    """SHAP explanations in their own replicas: their cost never slows a recommendation."""

    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.panel = _panel(self.settings)
        self.lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        from rayfolio.rl.load import load_agent

        s, panel = self.settings, self.panel
        splitter = PurgedDateSplitter(s.splits, purge=max(panel.horizons))
        ensemble = ForecastEnsemble(load_forecasters(ModelRegistry(s.registry), panel), panel)
        agent, _ = load_agent(ModelRegistry(s.registry), s.allocator, panel, splitter, whole_panel=True)
        train = panel.date_index(splitter.split_dates(panel.dates)["train"])
        train = train[train >= max(ensemble.min_history, agent.env.window) - 1]
        background = train[np.linspace(0, len(train) - 1, s.explain_background).astype(int)]
        with self.lock:  # never between an explanation's two SHAP passes
            self.ensemble, self.agent, self.background = ensemble, agent, background

    def reload(self) -> dict:
        return _reload(self._load, lambda: {}, self.settings.registry)

    def info(self) -> dict:
        return {"versions": {}}

    def explain(self, t: int, current: np.ndarray, horizon: int) -> dict:
        from rayfolio.explain.attributions import explain_ensemble, explain_policy
        from rayfolio.explain.rationale import DISCLAIMER, rationale, themes

        n = self.settings.explain_samples
        with self.lock:  # see build_app: never two SHAP passes at once in one process
            forecast = explain_ensemble(self.ensemble, t, horizon, self.background, self.panel.feature_names,
                                        nsamples=n)  # fmt: skip
            policy = explain_policy(self.agent, t, current, self.background, nsamples=n)
        names = self.panel.feature_names
        raw = self.panel.features[t]  # (N, F) the values the rationale quotes
        assets = {}
        for i, symbol in enumerate(forecast.symbols):
            values = {f: float(raw[i, k]) for k, f in enumerate(names)}
            by_return = themes(forecast.groups, forecast.contributions[i])
            by_weight = themes(policy.groups, policy.contributions[i])
            assets[symbol] = {
                "expected_return": float(forecast.values[i]),
                "base_value": float(forecast.base_values[i]),
                "attributions": _top(forecast.groups, forecast.contributions[i]),
                "rationale": rationale(symbol, f"expected {horizon}-day return", forecast.values[i], by_return,
                                       values),
                "policy_weight": float(policy.values[i]),
                "policy_base_value": float(policy.base_values[i]),
                "policy_attributions": _top(policy.groups, policy.contributions[i]),
                "policy_rationale": rationale(symbol, "weight before risk checks", policy.values[i], by_weight,
                                              values),
            }  # fmt: skip
        return {"as_of": str(self.panel.dates[t]), "horizon_days": horizon, "assets": assets, "disclaimer": DISCLAIMER,
                "method": f"SHAP expected gradients, {n} samples, background of {len(self.background)} training "
                          "dates; attributions + base_value = the explained value, up to sampling error"}  # fmt: skip


def _top(groups: tuple[str, ...], contributions: np.ndarray, k: int = 8) -> list[dict]:
    order = np.argsort(-np.abs(contributions))[:k]
    return [{"feature": groups[j], "contribution": float(contributions[j])} for j in order] + [
        {"feature": "all others", "contribution": float(np.delete(contributions, order).sum())}
    ]


# ----- HTTP --------------------------------------------------------------------------------------

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 422, 429, 503)}

api = FastAPI(
    title="rayfolio",
    version="1",
    description="Explained, risk-checked portfolio recommendations. Bearer API keys; see the README.",
)


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


@api.exception_handler(RequestError)
async def _request_error(_: Request, err: RequestError) -> JSONResponse:
    return error(err.status, err.code, str(err))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    code = "malformed_json" if first.get("type") == "json_invalid" else "invalid_request"
    return error(422, code, f"{where}: {first['msg']}" if where else first["msg"])


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
    codes = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "too_large", 429: "rate_limited", 503: "not_ready"}  # fmt: skip
    return error(err.status_code, codes.get(err.status_code, "error"), str(err.detail), getattr(err, "headers", None))


@api.exception_handler(Exception)
async def _unexpected(_: Request, err: Exception) -> JSONResponse:
    logger.exception("unexpected error")  # the trace goes to the replica's log, never to the client
    return error(500, "internal_error", "internal error; it has been logged")


# The ingress sets this from its settings. Serve freezes a serialised copy of ``api``
# (its middleware and any state with it) when the class is decorated, so the limit
# travels through the replica process's environment, which every copy shares.
BODY_LIMIT_ENV = "RAYFOLIO_MAX_BODY_BYTES"


@api.middleware("http")
async def _body_limit(request: Request, call_next):
    limit = int(os.environ.get(BODY_LIMIT_ENV, 64 * 1024))
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return error(413, "too_large", f"request body over {limit} bytes")
    if length is None and request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()  # chunked: read it once, bounded by the check below
        if len(body) > limit:
            return error(413, "too_large", f"request body over {limit} bytes")
    return await call_next(request)


# Routes anyone may call; every other path needs a known key, checked before anything else.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


@api.middleware("http")  # added last, so it runs first: before the body is read or validated
async def _authenticate(request: Request, call_next):
    path, root = request.scope["path"], request.scope.get("root_path", "")
    if (path.removeprefix(root) or "/") not in PUBLIC_PATHS:
        try:
            current_ingress()._authenticate(request)
        except HTTPException as err:
            return error(err.status_code, "unauthorized", str(err.detail), err.headers)
    return await call_next(request)


def current_ingress():
    """The Ingress replica serving this request (what Serve passes routes as ``self``); a test
    that runs the app in-process overrides this dependency with its own instance."""
    return serve.get_replica_context().servable_object


# The caller's key as a dependency, so it is checked before the body is: without a valid key
# every protected route answers 401, whatever the body.
INGRESS = Depends(current_ingress)


def caller(request: Request, ingress=INGRESS) -> ApiKey:
    return ingress._key(request)


def admin_caller(request: Request, ingress=INGRESS) -> ApiKey:
    return ingress._key(request, admin=True)


KEY, ADMIN_KEY = Depends(caller), Depends(admin_caller)


IDEMPOTENCY_KEY = Header(
    None,
    alias="Idempotency-Key",
    min_length=1,
    max_length=128,
    pattern=r"^[\x21-\x7e]+$",
    description="the client's id for this request (printable ASCII): a retry with the same key and body gets the "
    "first response back, recorded once in the audit log",
)


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, settings: dict, ensemble, explainer, allocator=None, risk_filter=None) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.ensemble, self.allocator, self.risk_filter = ensemble, allocator, risk_filter
        self.explainer = explainer
        self.keys = load_api_keys()
        if not self.keys and not s.insecure_dev:
            raise RuntimeError("no API keys configured (RAYFOLIO_API_KEYS or RAYFOLIO_API_KEYS_FILE)")
        self.limiter = RateLimiter(s.rate_per_key, s.burst_per_key)
        self.audit = AuditLog(s.audit_url)
        self.registry = ModelRegistry(s.registry)
        self.panel = _panel(s)
        self.limits = s.house_limits
        self.agent, self.local_versions = None, {}
        if allocator is None:  # placement "ingress": the policy and the risk filters run here
            self.agent, self.local_versions = _load_allocator(s, self.panel)
        self.market: Market | None = None
        self.model_versions: dict[str, str] = {}
        self.forecast_cache: dict[int, object] = {}  # date index -> EnsembleForecast, oldest dropped first
        self.metrics = ServiceMetrics()
        self.metrics.versions(self.local_versions)
        os.environ[BODY_LIMIT_ENV] = str(s.max_body_bytes)

    def reconfigure(self, user_config: dict) -> None:
        """House limits, live, when the risk filters run here (placement "ingress")."""
        self.limits = HouseLimits.model_validate(user_config)

    # ----- guards -------------------------------------------------------------------

    def _authenticate(self, request: Request) -> ApiKey:
        if self.settings.insecure_dev and not self.keys:
            return ApiKey("insecure-dev-anonymous", "admin")
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        key = find_key(self.keys, presented.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise HTTPException(401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"})
        return key

    def _key(self, request: Request, admin: bool = False) -> ApiKey:
        key = self._authenticate(request)
        if admin and not key.admin:
            raise HTTPException(403, "this route needs an admin key")
        allowed, retry_after = self.limiter.allow(key.key)
        if not allowed:
            raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(retry_after)))})
        return key

    async def _ready(self) -> Market:
        """Ready once every deployment has loaded and verified its models."""
        if self.market is None:
            remote = [self.ensemble, self.explainer] + ([] if self.agent else [self.allocator, self.risk_filter])
            infos = list(await asyncio.gather(*(d.info.remote() for d in remote)))
            if self.agent is not None:
                infos.append({"versions": self.local_versions, "min_history": self.agent.env.window})
            self.model_versions = {k: v for info in infos for k, v in info["versions"].items()}
            self.market = Market(self.panel, max(info.get("min_history", 1) for info in infos))
        return self.market

    # ----- routes -------------------------------------------------------------------

    @api.get("/healthz", summary="the ingress is alive")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", summary="every model loaded and verified", responses=ERRORS)
    async def readyz(self):
        try:
            await asyncio.wait_for(self._ready(), timeout=5.0)
        except Exception:  # any failure downstream means not ready
            return error(503, "not_ready", "models are loading or failed to load")
        return {"status": "ready", "model_versions": self.model_versions}

    @api.post("/v1/recommendations", response_model=RecommendationResponse, responses={**ERRORS, 409: ERRORS[422]})
    async def recommend(
        self,
        body: RecommendationRequest,
        request: Request,
        idempotency_key: str | None = IDEMPOTENCY_KEY,
        key: ApiKey = KEY,
    ) -> RecommendationResponse:
        market = await self._ready()
        t, current = market.validate(body)  # a bad request fails alone, before it joins a batch
        who, request_id = key_id(key.key), request_id_for(key_id(key.key), idempotency_key)
        if request_id is not None and (record := self.audit.get(request_id)) is not None:  # a retry: replay
            if record.payload["request"] != body.model_dump(mode="json"):
                raise idempotency_conflict()
            return RecommendationResponse.model_validate(record.payload["response"])
        started = time.perf_counter()
        response = await self._recommend_batch((who, body, t, current, request_id))
        if isinstance(response, RequestError):
            raise response
        self.metrics.served(self.settings.allocator, response.checks, (time.perf_counter() - started) * 1e3)
        return response

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _recommend_batch(self, items: list[tuple[str, RecommendationRequest, int, np.ndarray, str | None]]):
        """Concurrent recommendations decided together: one policy forward pass (here or, with
        placement "deployments", in one Allocator call and one RiskFilter call per batch: each
        hop costs milliseconds of CPU) and one audit transaction, committed before any response
        leaves. Items are (key id, request, date index, current weights, request id or None)."""
        ts = [item[2] for item in items]
        currents = [item[3] for item in items]
        if self.agent is not None:  # placement "ingress"
            forecasts = await self._forecasts(sorted(set(ts)))
            proposals = self.agent.decide_many(ts, currents)
            filtered = [filter_and_measure(self.market, t, p, c, body.risk_profile, self.limits)
                        for (_, body, t, c, _), p in zip(items, proposals, strict=True)]  # fmt: skip
        else:
            proposals, forecasts = await asyncio.gather(
                self.allocator.propose_many.remote(ts, currents), self._forecasts(sorted(set(ts)))
            )
            filtered = await self.risk_filter.apply_many.remote(
                [(t, p, c, body.risk_profile.model_dump()) for (_, body, t, c, _), p in zip(items, proposals,
                                                                                               strict=True)]
            )  # fmt: skip
        responses = [
            build_response(self.market, t, current, weights, checks, risk, forecasts[t],
                           body.risk_profile.horizon_days, self.model_versions, request_id)
            for (_, body, t, current, request_id), (weights, checks, risk) in zip(items, filtered, strict=True)
        ]  # fmt: skip
        # Committed before the responses leave; a retry that raced its first try gets the first answer.
        entries = [(who, body, r) for (who, body, *_), r in zip(items, responses, strict=True)]
        return audit_recommendations(self.audit, entries)

    async def _forecasts(self, ts: list[int]) -> dict:
        """The ensemble's per-date forecasts, kept here too: a date's forecast never changes
        while these models serve, so repeats skip the hop."""
        missing = [t for t in ts if t not in self.forecast_cache]
        self.metrics.cache_lookups(len(ts) - len(missing), len(missing), "ingress")
        for t, forecast in zip(missing, await asyncio.gather(*(self.ensemble.forecast.remote(t) for t in missing)),
                               strict=True):  # fmt: skip
            if len(self.forecast_cache) >= 256:
                self.forecast_cache.pop(next(iter(self.forecast_cache)))
            self.forecast_cache[t] = forecast
        return {t: self.forecast_cache[t] for t in ts}

    @api.post("/v1/explanations", responses=ERRORS, summary="SHAP attributions and a rationale per asset")
    async def explanations(self, body: ExplanationRequest, key: ApiKey = KEY) -> dict:
        market = await self._ready()
        if body.request_id is not None:
            record = self.audit.get(body.request_id)
            # Another key's recommendation does not exist for this key (admins see all).
            if record is None or (record.key_id != key_id(key.key) and not key.admin):
                raise HTTPException(404, f"no recommendation {body.request_id!r} for this key")
            original = RecommendationRequest.model_validate(record.payload["request"])
            recommendation = original.model_copy(
                update={"as_of": dt.date.fromisoformat(record.payload["response"]["as_of"])}
            )
        else:
            recommendation = RecommendationRequest.model_validate(
                body.model_dump(exclude={"request_id"}, exclude_none=True)
            )
        t, current = market.validate(recommendation)
        out = await self.explainer.explain.remote(t, current, recommendation.risk_profile.horizon_days)
        self.metrics.explanations.inc()
        return {"request_id": body.request_id, **out}

    @api.get("/v1/forecasts", responses=ERRORS)
    async def forecasts(
        self,
        request: Request,
        symbols: str | None = Query(None, description="comma-separated; default: every symbol"),
        horizon: int = Query(20, description="trading days: one of the store's label horizons"),
        as_of: dt.date | None = None,
        _: ApiKey = KEY,
    ) -> dict:
        market = await self._ready()
        t = market.date_index(as_of)
        wanted = [s.strip() for s in symbols.split(",")] if symbols else list(market.symbols)
        market.check_symbols(wanted, "symbols")
        forecast = await self.ensemble.forecast.remote(t)
        if horizon not in forecast.horizons:
            raise RequestError("invalid_request", f"horizon must be one of {list(forecast.horizons)}")
        h, idx = forecast.horizons.index(horizon), [market.index[s] for s in wanted]
        return {
            "as_of": str(market.dates[t]),
            "horizon": horizon,
            "ensemble": {s: float(forecast.expected_return[i, h]) for s, i in zip(wanted, idx, strict=True)},
            "confidence": {s: float(forecast.confidence[i, h]) for s, i in zip(wanted, idx, strict=True)},
            "models": {
                name: {s: float(scores[i, h]) for s, i in zip(wanted, idx, strict=True)}
                for name, scores in forecast.scores.items()
            },
            "model_weights": {name: float(w[h]) for name, w in forecast.model_weights.items()},
        }

    @api.get("/v1/models", responses=ERRORS)
    async def models(self, _: ApiKey = KEY) -> dict:
        return {"models": [self._model(name) for name in self.registry.models()], "serving": self.model_versions}

    @api.get("/v1/models/{name}", responses=ERRORS)
    async def model(self, name: str, _: ApiKey = KEY) -> dict:
        if name not in self.registry.models():
            raise HTTPException(404, f"no model named {name!r}")
        return self._model(name)

    @api.post("/v1/models/{name}/{action}", responses=ERRORS, summary="promote or roll back (admin)")
    async def stage(self, name: str, action: str, version: str | None = None, stage: str = "production",
                    _: ApiKey = ADMIN_KEY) -> dict:  # fmt: skip
        if action not in ("promote", "rollback") or name not in self.registry.models():
            raise HTTPException(404, f"no such model or action: {name}/{action}")
        try:
            if action == "promote":
                if version is None:
                    raise RequestError("invalid_request", "promote needs ?version=")
                self.registry.promote(name, version, stage)
            else:
                self.registry.rollback(name, stage)
        except RegistryError as err:
            raise RequestError("registry", str(err).replace(str(self.registry.root), "<registry>")) from None
        return self._model(name)

    @api.post("/v1/models/reload", responses={**ERRORS, 409: ERRORS[422]},
              summary="serve the registry's production versions now (admin)")  # fmt: skip
    async def reload(self, _: ApiKey = ADMIN_KEY) -> dict:
        """Every deployment loads and verifies the production versions, then swaps them in; one
        that cannot (a checksum that does not match, a missing file) keeps what it serves. Requests
        never wait for this, nor fail because of it."""
        remote = [self.ensemble, self.explainer] + ([] if self.agent is not None else [self.allocator])
        results = list(await asyncio.gather(*(d.reload.remote() for d in remote)))
        if self.agent is not None:
            results.append(_reload(self._load_local, lambda: self.local_versions, self.settings.registry))
        served_before, self.model_versions = self.model_versions, {k: v for r in results
                                                                   for k, v in r["versions"].items()}  # fmt: skip
        if self.model_versions != served_before:
            self.forecast_cache = {}  # forecasts of the models served before
        refused = sorted({r["error"] for r in results if r["error"]})
        if refused:
            raise RequestError("reload_refused", f"{'; '.join(refused)}; still serving {self.model_versions}", 409)
        return {"serving": self.model_versions}

    def _load_local(self) -> None:
        self.agent, self.local_versions = _load_allocator(self.settings, self.panel)
        self.metrics.versions(self.local_versions)

    def _model(self, name: str) -> dict:
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

    @api.get("/v1/audit", responses=ERRORS, summary="audit records and chain verification (admin)")
    async def audit_log(self, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**12),
                        _: ApiKey = ADMIN_KEY):  # fmt: skip
        check = self.audit.verify()
        records = self.audit.records(limit=limit, offset=offset)
        return {
            "chain": {"ok": check.ok, "records": check.records, "first_bad_seq": check.first_bad_seq,
                      "reason": check.reason},
            "records": [{"seq": r.seq, "created_at": r.created_at, "key_id": r.key_id, "request_id": r.request_id,
                         "kind": r.kind, "payload": r.payload, "hash": r.hash} for r in records],
        }  # fmt: skip


# Read by the ingress replica: forwarded in its runtime_env, since replicas do not
# inherit the environment of the process that deploys them on a running cluster.
SECRET_ENV = ("RAYFOLIO_API_KEYS", "RAYFOLIO_API_KEYS_FILE", "RAYFOLIO_AUDIT_KEY")


def build_app(settings: ServeSettings, environ: dict[str, str] | None = None) -> serve.Application:
    """The whole application, each deployment with its own scaling. ``environ``
    (default: this process's) supplies the keys' variables to the ingress."""
    environ = dict(os.environ) if environ is None else environ
    secrets = {k: environ[k] for k in SECRET_ENV if k in environ}
    plain = settings.model_dump(mode="json")
    limits = settings.house_limits.model_dump(mode="json")
    ensemble = EnsembleDeployment.options(**settings.ensemble.options(32)).bind(plain)
    # One explanation at a time per replica: SHAP's gradient passes share the models' autograd
    # state, and concurrent ones in one process fail; more load means more replicas.
    explainer = ExplainerDeployment.options(**settings.explainer.options(1)).bind(plain)
    ingress = Ingress.options(
        **settings.ingress.options(settings.ingress_max_ongoing, runtime_env={"env_vars": secrets}),
        max_queued_requests=settings.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s),
    )
    if settings.placement == "ingress":
        return ingress.options(user_config=limits).bind(plain, ensemble, explainer)
    allocator = AllocatorDeployment.options(**settings.allocator_scaling.options(32)).bind(plain)
    risk = RiskFilterDeployment.options(**settings.risk_filter.options(32), user_config=limits).bind(plain)
    return ingress.bind(plain, ensemble, explainer, allocator, risk)


def app_builder(args: dict) -> serve.Application:
    """``serve run`` / ``serve deploy`` entry (``import_path: rayfolio.serving.app:app_builder``):
    ``args`` are ``ServeSettings`` fields."""
    return build_app(ServeSettings.model_validate(args))
