"""The recommendation pipeline end to end, in-process: limits respected, audited, cached,
point in time, bad requests named; offline batches and single requests agree."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rayfolio.data.conventions import CASH
from rayfolio.serving.errors import RequestError
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.schemas import RecommendationRequest
from tests.serving.conftest import make_engine, make_panel


@pytest.fixture(scope="module")
def engine(panel, tmp_path_factory):
    return make_engine(panel, tmp_path_factory.mktemp("engine") / "audit.db")


def request(**body) -> RecommendationRequest:
    return RecommendationRequest.model_validate(body)


def flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{prefix}{i}.").items()}
    return {prefix: value}


def same_answer(a, b) -> bool:
    """Equal but for the request id, numbers up to rounding (a batch's policy pass is one matmul)."""
    x, y = (flat(r.model_dump(mode="json", exclude={"request_id"})) for r in (a, b))
    return x.keys() == y.keys() and all(
        x[k] == pytest.approx(y[k], rel=1e-9, abs=1e-12) if isinstance(x[k], float) else x[k] == y[k] for k in x
    )


def test_a_valid_request_respects_every_constraint_and_is_audited(engine):
    symbols = engine.symbols
    profile = {"risk_tolerance": 0.4, "max_position": 0.2, "exclude": [symbols[2]], "horizon_days": 5}
    body = {"portfolio": {symbols[0]: 0.3, symbols[1]: 0.2}, "risk_profile": profile}
    response = engine.recommend(request(**body), key="k1")
    w = response.target_weights
    assert sum(w.values()) == pytest.approx(1.0) and CASH in w
    assert all(v <= 0.2 + 1e-9 for k, v in w.items() if k != CASH) and symbols[2] not in w
    assert w[CASH] >= HouseLimits().cash_floor - 1e-9
    assert set(response.expected_returns) == set(symbols) and set(response.confidence) == set(symbols)
    assert response.checks[0].name == "turnover_cap" and response.portfolio_risk.volatility >= 0
    assert response.as_of == engine.panel.dates[-1].astype(dt.date)
    for symbol, trade in response.trades.items():
        before = body["portfolio"].get(symbol, 0.0) if symbol != CASH else 0.5
        assert trade == pytest.approx(w.get(symbol, 0.0) - before)
    record = engine.audit.get(response.request_id)
    assert record.key_id == "k1" and record.payload["response"]["target_weights"] == pytest.approx(w)
    assert engine.audit.verify().ok


def test_forecasts_are_computed_once_per_date(engine):
    calls = []
    original = engine.ensemble.forecast_many
    engine.ensemble.forecast_many = lambda ts: calls.append(ts) or original(ts)
    try:
        for _ in range(3):
            engine.recommend(request(as_of="2002-04-15"), key="k1")
        engine.recommend(request(as_of="2002-04-16"), key="k2")
    finally:
        engine.ensemble.forecast_many = original
    assert len(calls) == 2 and engine.pipeline.forecasts.cache.hits >= 2


def test_as_of_is_the_last_trading_date_on_or_before_it(engine):
    friday = engine.recommend(request(as_of="2002-03-15"), key="k").as_of
    sunday = engine.recommend(request(as_of="2002-03-17"), key="k").as_of
    assert friday == sunday == dt.date(2002, 3, 15)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"portfolio": {"NOPE": 0.1}}, "unknown_symbol", "unknown symbols in portfolio: NOPE"),
        ({"risk_profile": {"exclude": ["ZZZ"]}}, "unknown_symbol", "unknown symbols in risk_profile.exclude: ZZZ"),
        ({"as_of": "1999-01-04"}, "invalid_as_of", "outside the servable dates"),
        ({"as_of": "2030-01-02"}, "invalid_as_of", "outside the servable dates"),
    ],
)
def test_requests_the_market_cannot_serve_are_named(engine, body, code, message):
    before = engine.audit.count()
    with pytest.raises(RequestError, match=message) as caught:
        engine.recommend(request(**body), key="k")
    assert caught.value.code == code and caught.value.status == 422
    assert engine.audit.count() == before  # nothing recorded for a refused request


def test_a_recommendation_uses_no_data_after_its_date(tmp_path):
    full, short = make_panel(), make_panel(last_day=650)
    as_of = short.dates[-1].astype(dt.date)
    a = make_engine(full, tmp_path / "a.db").recommend(request(as_of=as_of.isoformat()), key="k")
    b = make_engine(short, tmp_path / "b.db").recommend(request(as_of=as_of.isoformat()), key="k")
    assert a.as_of == b.as_of == as_of
    np.testing.assert_allclose([a.target_weights.get(s, 0) for s in b.target_weights],
                               list(b.target_weights.values()), atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(list(a.expected_returns.values()), list(b.expected_returns.values()), rtol=1e-5)


def test_an_offline_batch_answers_like_single_requests_and_names_the_bad_ones(engine):
    bodies = [{"portfolio": {engine.symbols[0]: 0.3}, "as_of": "2002-05-01"},
              {"portfolio": {"NOPE": 0.1}},
              {"risk_profile": {"risk_tolerance": 0.9, "horizon_days": 60}, "as_of": "2002-05-02"}]  # fmt: skip
    before = engine.audit.count()
    batch = engine.pipeline.recommend_offline([request(**b) for b in bodies], key_id="batch")
    assert isinstance(batch[1], RequestError) and batch[1].code == "unknown_symbol"
    assert engine.audit.count() == before + 2  # the two it could serve, in one transaction
    for body, offline in zip(bodies[::2], batch[::2], strict=True):
        single = engine.recommend(request(**body), key="single")
        assert same_answer(single, offline)


def test_a_retry_with_the_same_idempotency_key_is_answered_and_recorded_once(engine):
    before = engine.audit.count()
    first = engine.recommend(request(as_of="2002-06-03"), key="k1", idempotency_key="order-1")
    again = engine.recommend(request(as_of="2002-06-03"), key="k1", idempotency_key="order-1")
    assert again == first and engine.audit.count() == before + 1
    with pytest.raises(RequestError, match="Idempotency-Key was used for a different request"):
        engine.recommend(request(as_of="2002-06-04"), key="k1", idempotency_key="order-1")
