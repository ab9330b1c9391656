"""Request and response models of the HTTP API (DESIGN.md), with examples for the OpenAPI
document. Validation that needs no model or market data lives here; unknown symbols and dates
are checked against the loaded market.

Requests are strict (no bool or string coerced to a number) and every rule enforced here is
declared in the JSON schema too (enums, bounds, ``propertyNames``, ``anyOf``), so the OpenAPI
document says exactly what the API accepts.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from rayfolio.data.conventions import CASH

MAX_SYMBOLS = 500
HORIZONS = (5, 20, 60)
Horizon = Literal[5, 20, 60]


def _iso_text(value: object) -> object:
    """A date travels as ISO text (never a number of seconds)."""
    if isinstance(value, str | dt.date):
        return value
    raise ValueError("a date must be ISO text, YYYY-MM-DD")


IsoDate = Annotated[dt.date, BeforeValidator(_iso_text), Field(strict=False)]
Symbol = Annotated[str, Field(min_length=1, max_length=32)]

# The portfolio's rules as JSON schema (enforced by ``_weights`` below, with messages that name them).
PORTFOLIO_SCHEMA = {
    "propertyNames": {"minLength": 1, "maxLength": 32},
    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
}


class RiskProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    risk_tolerance: float = Field(0.5, ge=0.0, le=1.0, description="0 cautious .. 1 aggressive")
    max_position: float = Field(0.25, gt=0.0, le=1.0, description="largest weight of any one asset")
    exclude: list[Symbol] = Field(default_factory=list, max_length=MAX_SYMBOLS, description="symbols never to hold")
    horizon_days: Horizon = Field(20, description="forecast horizon, trading days")


def _check_weights(portfolio: dict[str, float]) -> dict[str, float]:
    for symbol, weight in portfolio.items():
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {symbol!r} must be a finite number >= 0, got {weight}")
        if not symbol or len(symbol) > 32:
            raise ValueError(f"symbol {symbol[:40]!r} must be 1 to 32 characters")
    total = sum(portfolio.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"weights sum to {total:.6g}; they must sum to at most 1 (the rest is cash)")
    return portfolio


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "portfolio": {"AAPL": 0.2, "MSFT": 0.1},
                    "risk_profile": {"risk_tolerance": 0.5, "max_position": 0.2, "exclude": ["XOM"],
                                     "horizon_days": 20},
                    "as_of": None,
                }
            ]
        },
    )  # fmt: skip

    portfolio: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_SYMBOLS,
        description="current weights (each 0..1, summing to at most 1); the rest is cash",
        json_schema_extra=PORTFOLIO_SCHEMA,
    )
    risk_profile: RiskProfileIn = Field(default_factory=RiskProfileIn)
    as_of: IsoDate | None = Field(None, description="market date; default: the latest the models know")

    @field_validator("portfolio")
    @classmethod
    def _weights(cls, portfolio: dict[str, float]) -> dict[str, float]:
        return _check_weights(portfolio)


class ExplanationRequest(BaseModel):
    """Either a recommendation's ``request_id`` or a recommendation body (at least one of
    ``portfolio`` and ``risk_profile``), never both."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"oneOf": [
            {"required": ["request_id"], "properties": {"portfolio": False, "risk_profile": False, "as_of": False}},
            {"anyOf": [{"required": ["portfolio"]}, {"required": ["risk_profile"]}],
             "properties": {"request_id": False}},
        ]},
    )  # fmt: skip

    # Not nullable: a field given must hold a value (the schema's anyOf counts given fields).
    request_id: str = Field(None, min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")  # type: ignore[assignment]
    portfolio: dict[str, float] = Field(None, max_length=MAX_SYMBOLS, json_schema_extra=PORTFOLIO_SCHEMA)  # type: ignore[assignment]
    risk_profile: RiskProfileIn = None  # type: ignore[assignment]
    as_of: IsoDate = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_of(self) -> ExplanationRequest:
        body = self.portfolio is not None or self.risk_profile is not None or self.as_of is not None
        if (self.request_id is not None) == body or (body and self.portfolio is None and self.risk_profile is None):
            raise ValueError("give a request_id or a recommendation body (portfolio, risk_profile, as_of), not both")
        if self.portfolio is not None:
            _check_weights(self.portfolio)
        return self


class PortfolioRisk(BaseModel):
    volatility: float = Field(description="annualised, from the last year's daily returns")
    var_95: float = Field(description="one-day historical VaR at 95%, a positive loss")
    cvar_95: float = Field(description="one-day historical CVaR at 95%")


class CheckOut(BaseModel):
    name: str
    changed: bool
    detail: str
    amount: float = Field(0.0, description="sum over assets of |weight change| this check made")


class ExperimentArm(BaseModel):
    name: str = Field(description="the experiment (the serve config's user_config)")
    arm: Literal["control", "candidate"] = Field(description="the arm this client is assigned to")
    fallback: bool = Field(False, description="the assigned arm failed and the other arm's answer was served")


class RecommendationResponse(BaseModel):
    request_id: str
    as_of: dt.date
    target_weights: dict[str, float] = Field(description=f"symbol -> weight, {CASH} included, summing to 1")
    trades: dict[str, float] = Field(description="target minus current weight, for every symbol that changes")
    expected_returns: dict[str, float] = Field(description="ensemble forecast of the horizon's log return")
    confidence: dict[str, float] = Field(description="0..1, from the agreement of the ensemble's models")
    portfolio_risk: PortfolioRisk
    checks: list[CheckOut]
    model_versions: dict[str, str]
    status: Literal["ok", "pending_approval"] = Field(
        "ok", description="pending_approval: over a house approval threshold; an admin must approve it first"
    )
    executable: bool = Field(True, description="false until an admin approves a pending recommendation")
    valid_until: dt.datetime | None = Field(None, description="UTC; a pending recommendation expires then")
    approval_reasons: list[str] = Field(default_factory=list, description="the approval rules it crossed")
    experiment: ExperimentArm | None = None


class Decision(BaseModel):
    """An admin's approval or rejection of a pending recommendation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(min_length=1, max_length=500, description="why, for the audit log")


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. 'invalid_request', 'rate_limited'")
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error has this shape; no stack trace or file path ever appears in it."""

    error: ErrorBody
