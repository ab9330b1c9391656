"""The console's report routes over the run directory (``settings.report_dir``): the latest
backtest, and a comparison of model versions. The work is serving/reports.py's; files are read in
a worker thread, never on the event loop.

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.)
"""

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from rayfolio.serving import reports
from rayfolio.serving.auth import ApiKey
from rayfolio.serving.errors import RequestError
from rayfolio.serving.schemas import HORIZONS, ErrorResponse
from rayfolio.serving.service import RecommendationService
from rayfolio.serving.settings import ServeSettings

ERRORS = {status: {"model": ErrorResponse} for status in (401, 404, 409, 422, 429, 503)}
# 2 to 6 entries, `name` or `name:version` (the registry's name rule): declared, so every request the
# document allows names a well-formed list (what is not registered is then a 404).
ENTRY = r"[A-Za-z0-9._-]{1,64}(?::[A-Za-z0-9._-]{1,64})?"
COMPARED = rf"^{ENTRY}(?:,{ENTRY}){{1,5}}$"


def reports_router(settings: ServeSettings, service: RecommendationService, user) -> APIRouter:
    """``GET /v1/backtest`` and ``GET /v1/models/compare`` (any key). Include it before
    ``/v1/models/{name}``, which would otherwise take "compare" for a model's name."""
    router = APIRouter()
    run_dir = settings.report_dir
    rank_ic = reports.RankIcByYear(run_dir, settings.store)

    @router.get("/v1/backtest", responses=ERRORS,
                summary="the run's latest backtest: metrics per strategy, equity and drawdown curves")  # fmt: skip
    async def backtest(_: ApiKey = user) -> dict:
        return await asyncio.to_thread(reports.backtest, run_dir)

    @router.get("/v1/models/compare", responses=ERRORS,
                summary="model versions side by side: registry metrics and walk-forward Rank IC by year")  # fmt: skip
    async def compare(
        models: str = Query(
            max_length=1000,
            pattern=COMPARED,
            description="2 to 6 entries, comma-separated: `name` (its production version) or `name:version`",
            examples=["lstm-forecaster,transformer-forecaster:v0001"],
        ),
        horizon: Annotated[
            int,
            Query(
                description="trading days of the Rank IC's forward return", json_schema_extra={"enum": list(HORIZONS)}
            ),
        ] = 20,
        split: Literal["test", "validation"] = Query(
            "test", description="the forecasts scored: test = the walk-forward's out-of-sample segments"
        ),
        _: ApiKey = user,
    ) -> dict:
        def run() -> dict:
            registry = service.registry
            entries = reports.parse_models(models, registry)
            summaries = [reports.version_summary(registry, e) for e in entries]
            families = {s["family"] for s in summaries if s["kind"] == "forecaster"}
            try:
                by_model, source = rank_ic(horizon, split)
            except RequestError as err:
                if err.status != 404:
                    raise
                by_model, source = {}, str(err)  # no walk-forward yet: the metrics still compare
            return {"models": summaries, "horizon": horizon,
                    "rank_ic_by_year": {f: by_model[f] for f in sorted(families) if f in by_model},
                    "rank_ic_source": source}  # fmt: skip

        return await asyncio.to_thread(run)

    return router
