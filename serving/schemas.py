"""Request and response models of the HTTP API (DESIGN.md), with examples
for the OpenAPI document. Validation that needs no model or market data lives
here; unknown symbols and dates are checked against the loaded market."""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CASH = "CASH"
MAX_SYMBOLS = 500


class RiskProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    risk_tolerance: float = Field(0.5, ge=0.0, le=1.0, description="0 cautious .. 1 aggressive")
    max_position: float = Field(0.25, gt=0.0, le=1.0, description="largest weight of any one asset")
    exclude: list[str] = Field(default_factory=list, max_length=MAX_SYMBOLS, description="symbols never to hold")
    horizon_days: Literal[5, 20, 60] = Field(20, description="forecast horizon, trading days")


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
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
        default_factory=dict, max_length=MAX_SYMBOLS, description="current weights; the rest is cash"
    )
    risk_profile: RiskProfileIn = Field(default_factory=RiskProfileIn)
    as_of: dt.date | None = Field(None, description="market date; default: the latest the models know")

    @field_validator("portfolio")
    @classmethod
    def _weights(cls, portfolio: dict[str, float]) -> dict[str, float]:
        for symbol, weight in portfolio.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {symbol!r} must be a finite number >= 0, got {weight}")
            if not symbol or len(symbol) > 32:
                raise ValueError(f"symbol {symbol[:40]!r} must be 1 to 32 characters")
        total = sum(portfolio.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"weights sum to {total:.6g}; they must sum to at most 1 (the rest is cash)")
        return portfolio


class ExplanationRequest(BaseModel):
    """Either a recommendation's ``request_id`` or a full recommendation body."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, max_length=64)
    portfolio: dict[str, float] | None = None
    risk_profile: RiskProfileIn | None = None
    as_of: dt.date | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ExplanationRequest:
        if self.request_id is None and self.portfolio is None and self.risk_profile is None:
            raise ValueError("give a request_id or a recommendation body (portfolio, risk_profile, as_of)")
        if self.portfolio is not None:
            RecommendationRequest._weights(self.portfolio)
        return self


class PortfolioRisk(BaseModel):
    volatility: float = Field(description="annualised, from the last year's daily returns")
    var_95: float = Field(description="one-day historical VaR at 95%, a positive loss")
    cvar_95: float = Field(description="one-day historical CVaR at 95%")


class CheckOut(BaseModel):
    name: str
    changed: bool
    detail: str


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


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. 'invalid_request', 'rate_limited'")
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error has this shape; no stack trace or file path ever appears in it."""

    error: ErrorBody
