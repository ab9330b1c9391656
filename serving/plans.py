"""Goal planning over HTTP: ``POST /v1/plans`` (rl/planning.py's Monte Carlo on a strategy's backtested
daily net returns) and ``GET /v1/plans/strategies`` (what one can plan with), for any valid key.

The strategies are the columns of the served run's returns.parquet (``settings.report_dir``), read
once when the replica starts: the served profiles by their names (cautious, balanced, aggressive,
for ``served_<profile>``) and every backtested strategy by its column. They are declared as an enum
in the request's schema, so the document says exactly which names the API accepts and an unknown
one is a 422 naming ``strategy`` and listing them. Without a backtest in the run directory every
plan is a 404 that says so (a new backtest is planned with once the replicas restart).

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations at runtime.)
"""

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter
from pydantic import ConfigDict, Field, create_model, field_validator

from rayfolio.rl.planning import SERVED_PREFIX, PlanError, PlanResult, PlanSpec, ReturnHistory, load_histories, plan
from rayfolio.serving.errors import RequestError
from rayfolio.serving.schemas import ErrorResponse
from rayfolio.serving.settings import ServeSettings

logger = logging.getLogger(__name__)

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 503)}
RETURNS_FILE = "returns.parquet"
MAX_PATHS = 50_000  # per request: ~0.5 s of one core at 40 years, the ingress's CPU shared with recommendations
DEFAULT_STRATEGY = "balanced"


class PlanBody(PlanSpec):
    """``PlanSpec`` as a request: strict types (no string or bool for a number), at most ``MAX_PATHS``."""

    model_config = ConfigDict(strict=True)

    paths: int = Field(10_000, ge=100, le=MAX_PATHS, description="Monte Carlo paths")

    @field_validator("paths", "seed", mode="before")
    @classmethod
    def _whole_number(cls, value):
        """JSON has one number type: 1558.0 is the integer its schema allows (strict mode alone refuses it)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value


def plans_router(settings: ServeSettings, user) -> APIRouter:
    """The planning routes for one ingress replica; ``user``: the app's any-valid-key dependency."""
    path = settings.report_dir / RETURNS_FILE
    histories: dict[str, ReturnHistory] = {}
    if path.exists():
        try:
            histories = load_histories(path)
        except PlanError as err:  # the replica still serves everything else; plans say why not
            logger.warning("goal plans unavailable: %s", err)
    names = tuple(histories)
    default = DEFAULT_STRATEGY if DEFAULT_STRATEGY in histories else (names[0] if names else DEFAULT_STRATEGY)
    strategy_type = Literal[names] if names else str  # type: ignore[valid-type]
    request_model = create_model(
        "PlanRequest",
        __base__=PlanBody,
        strategy=(strategy_type, Field(default, description="a served profile or a backtested strategy "
                                       "(GET /v1/plans/strategies)", max_length=64)),
    )  # fmt: skip
    router = APIRouter()

    @router.get("/v1/plans/strategies", responses=ERRORS, summary="the strategies a goal plan can resample")
    async def strategies(_=user) -> dict:
        return {
            "default": default if names else None,
            "strategies": [
                {"name": name, "column": h.strategy, "served": h.strategy.startswith(SERVED_PREFIX),
                 "description": _description(h), "data_start": h.start, "data_end": h.end,
                 "days": len(h.returns)}
                for name, h in histories.items()
            ],
        }  # fmt: skip

    @router.post("/v1/plans", response_model=PlanResult, responses=ERRORS,
                 summary="the chance of reaching a goal; the contribution and years it needs")  # fmt: skip
    async def make_plan(body: request_model, _=user) -> PlanResult:  # type: ignore[valid-type]
        if not histories:
            raise RequestError("not_found", "no backtest returns to plan with in the served run; run `rayfolio run` "
                               "and restart the service", 404)  # fmt: skip
        history = histories[body.strategy]
        spec = PlanSpec.model_validate(body.model_dump(exclude={"strategy"}))
        try:
            return await asyncio.to_thread(plan, history, spec)
        except PlanError as err:
            raise RequestError("invalid_request", str(err)) from None

    return router


def _description(history: ReturnHistory) -> str:
    if not history.strategy.startswith(SERVED_PREFIX):
        return "backtested strategy"
    return f"the service's {history.strategy.removeprefix(SERVED_PREFIX)} profile, as served (backtest)"
