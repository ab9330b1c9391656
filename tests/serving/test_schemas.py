"""Request validation that needs no model: weights, risk profile, shape."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rayfolio.serving.schemas import ExplanationRequest, RecommendationRequest


def test_a_valid_request_and_its_defaults():
    r = RecommendationRequest.model_validate({"portfolio": {"AAPL": 0.6, "MSFT": 0.4}})
    assert r.risk_profile.horizon_days == 20 and r.as_of is None
    assert RecommendationRequest.model_json_schema()["examples"][0]["portfolio"] == {"AAPL": 0.2, "MSFT": 0.1}


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ({"portfolio": {"A": 0.7, "B": 0.5}}, "portfolio", "weights sum to 1.2; they must sum to at most 1"),
        ({"portfolio": {"A": -0.1}}, "portfolio", "weight of 'A' must be a finite number >= 0"),
        ({"portfolio": {"A": float("nan")}}, "portfolio", "must be a finite number"),
        ({"portfolio": {"": 0.1}}, "portfolio", "must be 1 to 32 characters"),
        ({"risk_profile": {"risk_tolerance": 1.5}}, "risk_profile.risk_tolerance", "less than or equal to 1"),
        ({"risk_profile": {"horizon_days": 7}}, "risk_profile.horizon_days", "Input should be 5, 20 or 60"),
        ({"risk_profile": {"max_position": 0}}, "risk_profile.max_position", "greater than 0"),
        ({"portfolios": {}}, "portfolios", "Extra inputs are not permitted"),
        ({"as_of": "yesterday"}, "as_of", "valid date"),
    ],
)
def test_bad_requests_name_the_field_and_the_rule(body, where, message):
    with pytest.raises(ValidationError) as caught:
        RecommendationRequest.model_validate(body)
    error = caught.value.errors()[0]
    assert ".".join(map(str, error["loc"])) == where and message in error["msg"]


def test_an_explanation_needs_a_request_id_or_a_body():
    assert ExplanationRequest.model_validate({"request_id": "abc"}).request_id == "abc"
    with pytest.raises(ValidationError, match="give a request_id or a recommendation body"):
        ExplanationRequest.model_validate({})
    with pytest.raises(ValidationError, match="sum to at most 1"):
        ExplanationRequest.model_validate({"portfolio": {"A": 2.0}})
