"""The HTTP API: ``create_app`` builds the FastAPI app from the settings, the service its routes
call and the API keys. No module-level app and no Serve context: the ingress deployment builds
one per replica (``__serve_build_asgi_app__``), tests build one in-process.

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.)

Guards, in the order a request meets them: admission, the API key and the body size (guards.py),
then per route the key's scope (403) and rate limit (429). Every error, these included, is the
one JSON error model.
"""

import asyncio
import datetime as dt
import logging
import re
import time
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rayfolio.serving import approvals
from rayfolio.serving.audit import key_id
from rayfolio.serving.auth import ApiKey, RateLimiter
from rayfolio.serving.batching import Batcher
from rayfolio.serving.compliance import compliance_report
from rayfolio.serving.compliance_render import to_csv, to_markdown
from rayfolio.serving.console import mount_console
from rayfolio.serving.errors import RequestError
from rayfolio.serving.experiment_status import ExperimentError, conclude_experiment, experiment_status
from rayfolio.serving.guards import Guards, error
from rayfolio.serving.jobs_routes import jobs_router
from rayfolio.serving.openapi import declare_market
from rayfolio.serving.plans import plans_router
from rayfolio.serving.report_routes import reports_router
from rayfolio.serving.schemas import (
    HORIZONS,
    Decision,
    ErrorResponse,
    ExplanationRequest,
    RecommendationRequest,
    RecommendationResponse,
)
from rayfolio.serving.service import RecommendationService
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.catalog import CATALOG
from rayfolio.training.registry import RegistryError

logger = logging.getLogger(__name__)

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 422, 429, 503)}
CONFLICT = {**ERRORS, 409: {"model": ErrorResponse}}
CODES = {400: "malformed_body", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         413: "too_large", 429: "rate_limited", 503: "unavailable"}  # fmt: skip
SYMBOLS_PATTERN = r"^[^,\s]{1,32}(,[^,\s]{1,32})*$"
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
REQUEST_ID_PATTERN = r"^[0-9A-Za-z_-]{1,64}$"
PRINTABLE = r"^[\x21-\x7e]+$"
DAY = {"format": "date"}  # a query parameter holding an ISO day, YYYY-MM-DD


def create_app(settings: ServeSettings, service: RecommendationService, keys: tuple[ApiKey, ...]) -> FastAPI:
    """The API for one ingress replica (or one in-process server)."""
    description = "Explained, risk-checked portfolio recommendations. Bearer API keys; see the README."
    # docs_url/redoc_url None: FastAPI's pages load a CDN; serving/console.py serves vendored ones.
    app = FastAPI(title="rayfolio", version="1", description=description, docs_url=None, redoc_url=None)
    _error_handlers(app)
    app.add_middleware(Guards, keys=keys, max_in_flight=settings.max_in_flight, max_body_bytes=settings.max_body_bytes,
                       retry_after_s=settings.retry_after_s, insecure_dev=settings.insecure_dev)  # fmt: skip
    served: dict = {}  # the document for one market: {market: document}

    def openapi() -> dict:
        """FastAPI's document, and once the models are loaded, the market's symbols and dates
        (declared again when a new store version brings new dates)."""
        pipeline = service.pipeline
        if pipeline is not None and pipeline.market not in served:
            app.openapi_schema = None  # FastAPI's cache of the document without them
            served.clear()
            served[pipeline.market] = declare_market(FastAPI.openapi(app), pipeline.market)
        return next(iter(served.values()), None) or FastAPI.openapi(app)

    app.openapi = openapi
    limiter = RateLimiter(settings.rate_per_key, settings.burst_per_key)

    # Coroutines, not plain functions: FastAPI runs a plain dependency in its thread pool, a thread
    # hop per request for a dictionary lookup.
    async def caller(request: Request) -> ApiKey:
        return _within_rate(request.state.api_key, limiter)

    async def admin_caller(request: Request) -> ApiKey:
        key = request.state.api_key
        if not key.admin:
            raise HTTPException(403, "this route needs an admin key")
        return _within_rate(key, limiter)

    user, admin = Depends(caller), Depends(admin_caller)

    # Concurrent recommendations decided together: one policy forward pass (or one Allocator and
    # one RiskFilter call) and one audit transaction per batch.
    async def run(batch: list) -> list:
        answers = await service.pipeline.run(batch)
        service.metrics.served(settings.allocator, (a for a in answers if not isinstance(a, RequestError)))
        return answers

    # One batch in progress at a time (group commit, serving/batching.py): arrivals gather behind it, so
    # under load one audit transaction and one policy pass serve many requests. Measured with HAProxy at
    # 64 connections: 793 req/s and 1.9 ms of ingress CPU per request, against 625 and 2.4 ms with two.
    decide = Batcher(run, max_size=32, wait_s=0.002, max_running=1)

    @app.get("/healthz", summary="the ingress is alive")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="every model loaded and verified", responses=ERRORS)
    async def readyz():
        try:
            await asyncio.wait_for(service.ready(), timeout=5.0)
        except Exception:  # any failure downstream means not ready
            # Say which file, when a served model no longer verifies (a tampered weight or ONNX graph).
            problem = await asyncio.to_thread(registry_problem, service)
            return error(503, "not_ready", problem or "models are loading or failed to load")
        return {"status": "ready", "model_versions": service.model_versions, "data": service.data()}

    @app.post("/v1/recommendations", response_model=RecommendationResponse, responses=CONFLICT)
    async def recommend(
        body: RecommendationRequest,
        idempotency_key: str | None = Header(
            None, alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
            description="the client's id for this request (printable ASCII): a retry with the same key and body "
            "gets the first response back, recorded once in the audit log",
        ),
        client_id: str | None = Header(
            None, alias="X-Client-Id", min_length=1, max_length=128, pattern=PRINTABLE,
            description="the client's stable id (e.g. an end user of an app sharing one key): what an experiment "
            "assigns arms by; default: the API key",
        ),
        key: ApiKey = user,
    ) -> RecommendationResponse:  # fmt: skip
        started = time.perf_counter()
        admitted = (await service.ready()).admit(body, key_id(key.key), idempotency_key, client_id)
        if isinstance(admitted, RecommendationResponse):  # a retry: its recorded answer
            return admitted
        response = await decide(admitted)
        if isinstance(response, RequestError):
            raise response
        service.metrics.latency_ms((time.perf_counter() - started) * 1e3)
        return response

    @app.get("/v1/recommendations/{request_id}", responses=ERRORS,
             summary="a recommendation's status: ok, pending_approval, approved, rejected or expired")  # fmt: skip
    async def recommendation(request_id: str = Path(pattern=REQUEST_ID_PATTERN), key: ApiKey = user) -> dict:
        status = await asyncio.to_thread(approvals.recommendation_status, service.audit, request_id)
        if status["key_id"] != key_id(key.key) and not key.admin:  # another key's does not exist for this one
            raise HTTPException(404, f"no recommendation {request_id!r}")
        return status

    @app.post("/v1/recommendations/{request_id}/{action}", responses=CONFLICT,
              summary="approve or reject a pending recommendation, with a reason (admin)")  # fmt: skip
    async def decide_recommendation(
        body: Decision,
        action: Literal["approve", "reject"],
        request_id: str = Path(pattern=REQUEST_ID_PATTERN),
        key: ApiKey = admin,
    ) -> dict:
        decision = "approved" if action == "approve" else "rejected"
        return await asyncio.to_thread(approvals.decide, service.audit, request_id, decision, body.reason,
                                       key_id(key.key))  # fmt: skip

    @app.get("/v1/experiments", responses=ERRORS, summary="the experiment this replica serves (admin)")
    async def experiments(_: ApiKey = admin) -> dict:
        await service.ready()
        return service.experiment_info()

    @app.get("/v1/experiments/{name}", responses=ERRORS,
             summary="an experiment's arms, their paired per-date comparison and the decision (admin)")  # fmt: skip
    async def experiment(
        name: str = Path(pattern=NAME_PATTERN),
        cost_bps: float = Query(10.0, ge=0, le=1000, description="costs per unit of turnover in the comparison"),
        _: ApiKey = admin,
    ) -> dict:
        await service.ready()
        status = await asyncio.to_thread(experiment_outcome, service, name, cost_bps)
        return status.model_dump(mode="json")

    @app.post("/v1/experiments/{name}/{action}", responses=CONFLICT,
              summary="promote the candidate (only when the decision is promote) or stop (admin)")  # fmt: skip
    async def conclude(
        action: Literal["promote", "stop"],
        name: str = Path(pattern=NAME_PATTERN),
        cost_bps: float = Query(10.0, ge=0, le=1000),
        key: ApiKey = admin,
    ) -> dict:
        await service.ready()

        def run() -> dict:
            status = experiment_outcome(service, name, cost_bps)
            try:
                record = conclude_experiment(service.audit, service.registry if action == "promote" else None, name,
                                             action, key_id(key.key), status)  # fmt: skip
            except ExperimentError as err:
                raise RequestError(err.code, str(err), err.http_status) from None
            except RegistryError as err:  # the candidate no longer verifies: nothing recorded, nothing moved
                raise RequestError(
                    "registry", str(err).replace(str(service.registry.root), "<registry>"), 409
                ) from None
            return {"concluded": record.payload["action"], "seq": record.seq, "status": status.model_dump(mode="json")}

        out = await asyncio.to_thread(run)
        service.concluded_now()  # this replica at once; the others within data_poll_s
        return out

    @app.post("/v1/explanations", responses=ERRORS, summary="SHAP attributions and a rationale per asset")
    async def explanations(body: ExplanationRequest, key: ApiKey = user) -> dict:
        market = (await service.ready()).market
        target = None  # a recorded recommendation's target weights: the assets it trades
        if body.request_id is not None:
            record = service.audit.get(body.request_id)
            # Another key's recommendation does not exist for this key (admins see all).
            if record is None or (record.key_id != key_id(key.key) and not key.admin):
                raise HTTPException(404, f"no recommendation {body.request_id!r} for this key")
            recommendation = RecommendationRequest.model_validate(record.payload["request"]).model_copy(
                update={"as_of": dt.date.fromisoformat(record.payload["response"]["as_of"])}
            )
            weights = record.payload["response"]["target_weights"]
            target = market.weights_vector({s: w for s, w in weights.items() if s in market.index})
        else:
            recommendation = RecommendationRequest.model_validate(
                body.model_dump(exclude={"request_id"}, exclude_none=True)
            )
        t, current = market.validate(recommendation)
        out = await service.explain(t, current, recommendation.risk_profile.horizon_days, target)
        return {"request_id": body.request_id, **out}

    @app.get("/v1/forecasts", responses=ERRORS)
    async def forecasts(
        symbols: str | None = Query(None, pattern=SYMBOLS_PATTERN, description="comma-separated; default: all"),
        horizon: Annotated[int, Query(description="trading days", json_schema_extra={"enum": list(HORIZONS)})] = 20,
        as_of: dt.date | None = None,
        _: ApiKey = user,
    ) -> dict:
        market = (await service.ready()).market
        t = market.date_index(as_of)
        wanted = symbols.split(",") if symbols else list(market.symbols)
        market.check_symbols(wanted, "symbols")
        forecast = await service.forecast(t)
        if horizon not in HORIZONS or horizon not in forecast.horizons:
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

    # Before /v1/models/{name}, which would take "compare" for a model's name.
    app.include_router(reports_router(settings, service, user))  # GET /v1/backtest, /v1/models/compare

    @app.get("/v1/models", responses=ERRORS)
    async def models(key: ApiKey = user) -> dict:
        await service.ready()
        # The forecaster families' catalog (use cases, latency class...): what the console filters by;
        # "admin": whether this key may promote or roll back (the console shows those actions only then).
        return {"models": [service.model_card(n) for n in service.registry.models()], "serving": service.model_versions,
                "catalog": [spec.as_dict() for spec in CATALOG.values()], "admin": key.admin}  # fmt: skip

    # Before /v1/models/{name}: a 405 on this path names this route's method (Starlette's Allow
    # header comes from the first route whose path matches).
    @app.post(
        "/v1/models/reload",
        responses=CONFLICT,
        summary="serve the store's newest version and the registry's production versions now (admin)",
    )
    async def reload(_: ApiKey = admin) -> dict:
        await service.ready()
        return {"serving": await service.reload(), "data": service.data()}

    @app.get("/v1/models/{name}", responses=ERRORS)
    async def model(name: str = Path(pattern=NAME_PATTERN), _: ApiKey = user) -> dict:
        if name not in service.registry.models():
            raise HTTPException(404, f"no model named {name!r}")
        return service.model_card(name)

    @app.post("/v1/models/{name}/{action}", responses=ERRORS, summary="promote or roll back (admin)")
    async def stage(
        action: Literal["promote", "rollback"],
        name: str = Path(pattern=NAME_PATTERN),
        version: str | None = Query(None, pattern=NAME_PATTERN),
        stage: Literal["production", "staging"] = "production",
        _: ApiKey = admin,
    ) -> dict:
        if name not in service.registry.models():
            raise HTTPException(404, f"no model named {name!r}")
        return service.stage(name, action, version, stage)

    @app.get("/v1/audit", responses=ERRORS, summary="audit records and chain verification (admin)")
    async def audit_log(
        limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**12), _: ApiKey = admin
    ) -> dict:
        check = service.audit.verify()
        records = service.audit.records(limit=limit, offset=offset)
        return {
            "chain": {"ok": check.ok, "records": check.records, "first_bad_seq": check.first_bad_seq,
                      "reason": check.reason},
            "records": [{"seq": r.seq, "created_at": r.created_at, "key_id": r.key_id, "request_id": r.request_id,
                         "kind": r.kind, "payload": r.payload, "hash": r.hash} for r in records],
        }  # fmt: skip

    report_formats = {"content": {"application/json": {}, "text/markdown": {"schema": {"type": "string"}},
                                  "text/csv": {"schema": {"type": "string"}}}}  # fmt: skip

    @app.get("/v1/audit/report", responses={200: report_formats, **ERRORS},
             summary="the compliance report of the audit log over a window of days (admin)")  # fmt: skip
    async def audit_report(
        first: Annotated[str | None, Query(alias="from", json_schema_extra=DAY, description="first day (UTC)")] = None,
        last: Annotated[str | None, Query(alias="to", json_schema_extra=DAY, description="last day (UTC)")] = None,
        format: Literal["json", "md", "csv"] = "json",
        _: ApiKey = admin,
    ):
        # Both days included; ISO text only, never a number of seconds. A window that ends before it
        # starts holds no record: the report says so rather than refusing.
        start, end = _day(first, "from"), _day(last, "to")
        report = await asyncio.to_thread(compliance_report, service.audit, start, end)
        if format == "json":
            return report.model_dump(mode="json")
        text, media = (to_markdown(report), "text/markdown") if format == "md" else (to_csv(report), "text/csv")
        return PlainTextResponse(text, media_type=f"{media}; charset=utf-8")

    app.include_router(plans_router(settings, user))  # POST /v1/plans, GET /v1/plans/strategies
    mount_console(app)  # /ui, /docs, /redoc: vendored, same origin, under a Content-Security-Policy
    app.include_router(jobs_router(settings, service, admin))
    return app


def _day(text: str | None, name: str) -> dt.date | None:
    """An ISO day (YYYY-MM-DD: the "date" format of JSON Schema), or a 422 naming the parameter."""
    if text is None:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise RequestError("invalid_request", f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD)")


def registry_problem(service: RecommendationService) -> str | None:
    """Why a served model does not verify (the production forecasters, the allocator named in the
    settings), naming the file; None when they all do."""
    registry, allocator = service.registry, service.settings.allocator
    try:
        registry.production("forecaster")  # each version's checksums verified
        if allocator != "best":
            registry.get(allocator)
    except RegistryError as err:
        return "models failed to load: " + str(err).replace(str(registry.root), "<registry>")
    return None


def experiment_outcome(service: RecommendationService, name: str, cost_bps: float):
    """The experiment's status from the audit log and the served prices; its errors as HTTP errors."""
    try:
        return experiment_status(service.audit, name, service.local[0], cost_bps=cost_bps)
    except ExperimentError as err:
        raise RequestError(getattr(err, "code", "experiment"), str(err), getattr(err, "http_status", 422)) from None


def _within_rate(key: ApiKey, limiter: RateLimiter) -> ApiKey:
    allowed, retry_after = limiter.allow(key.key)
    if not allowed:
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(retry_after)))})
    return key


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return error(err.status, err.code, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        code = "malformed_json" if first.get("type") == "json_invalid" else "invalid_request"
        return error(422, code, f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = CODES.get(err.status_code, "error")
        return error(err.status_code, code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        logger.exception("unexpected error")  # the trace goes to the replica's log, never to the client
        return error(500, "internal_error", "internal error; it has been logged")
