"""Risk filters: every limit holds on any input, and each check says what it changed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import ledoit_wolf

from rayfolio.serving.risk import HouseLimits, MarketState, RiskProfile, apply_risk_filters, portfolio_vol

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE")
rng = np.random.default_rng(0)
CALM = MarketState.from_returns(SYMBOLS, rng.normal(0.0004, 0.01, (252, 5)))


def simplex(draw, n: int) -> np.ndarray:
    raw = np.array(draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)))
    return raw / raw.sum() if raw.sum() > 0 else np.eye(n)[-1]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_every_limit_holds(data):
    proposal, current = simplex(data.draw, 6), simplex(data.draw, 6)
    profile = RiskProfile(
        risk_tolerance=data.draw(st.floats(0, 1)),
        max_position=data.draw(st.floats(0.05, 1)),
        exclude=tuple(data.draw(st.lists(st.sampled_from(SYMBOLS), max_size=2))),
    )
    limits = HouseLimits(
        max_position=data.draw(st.floats(0.1, 1)),
        cash_floor=data.draw(st.floats(0, 0.2)),
        turnover_cap=data.draw(st.floats(0.05, 2)),
        vol_target=data.draw(st.floats(0.02, 0.3)),
    )
    stressed = data.draw(st.booleans())
    state = MarketState(SYMBOLS, CALM.covariance, 0.3 if stressed else 0.01, 1.0)
    w, checks = apply_risk_filters(proposal, current, profile, limits, state)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[:-1].max() <= min(profile.max_position, limits.max_position) + 1e-9
    assert all(w[SYMBOLS.index(s)] == 0 for s in profile.exclude)
    assert w[-1] >= limits.cash_floor - 1e-9
    assert portfolio_vol(w[:-1], state.covariance) <= limits.vol_target * (0.5 + profile.risk_tolerance) + 1e-9
    if stressed:
        assert w[:-1].sum() <= limits.breaker_risky_cap + 1e-9
    assert [c.name for c in checks] == ["turnover_cap", "excluded_symbols", "max_position", "volatility_target",
                                        "circuit_breaker", "cash_floor"]  # fmt: skip


def test_volatility_is_ledoit_wolfs_even_with_more_assets_than_days():
    """The state's covariance is scikit-learn's Ledoit-Wolf of the lookback (well conditioned when
    N > days), read from the returns in place."""
    returns = rng.normal(0.0004, 0.01, (60, 100)) + rng.normal(0, 0.01, (60, 1))
    state = MarketState.from_returns(tuple(f"S{i}" for i in range(100)), returns)
    expected = ledoit_wolf(returns)[0]
    for w in (np.full(100, 0.01), np.eye(100)[7], rng.dirichlet(np.ones(100)) * 0.8):
        assert portfolio_vol(w, state.covariance) == pytest.approx(np.sqrt(w @ expected @ w * 252), rel=1e-9)
    assert np.shares_memory(state.covariance.returns, returns)  # a cached state holds no copy of the lookback


def test_a_proposal_inside_every_limit_passes_unchanged():
    proposal = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    w, checks = apply_risk_filters(proposal, proposal, RiskProfile(0.5, 0.3), HouseLimits(), CALM)
    np.testing.assert_allclose(w, proposal)
    assert not any(c.changed for c in checks)


def test_each_check_reports_what_it_changed():
    proposal = np.array([0.6, 0.3, 0.1, 0.0, 0.0, 0.0])
    current = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    stressed = MarketState(SYMBOLS, CALM.covariance, 0.25, 2.0)
    limits = HouseLimits(turnover_cap=0.9, max_position=0.25, vol_target=0.5, breaker_risky_cap=0.2)
    w, checks = apply_risk_filters(proposal, current, RiskProfile(1.0, 0.5, ("BBB",)), limits, stressed)
    by_name = {c.name: c for c in checks}
    assert by_name["turnover_cap"].changed and "turnover 1.000 cut to 0.900" in by_name["turnover_cap"].detail
    assert by_name["excluded_symbols"].changed and "BBB 0.270 -> 0.000" in by_name["excluded_symbols"].detail
    assert by_name["max_position"].changed and "AAA 0.540 -> 0.250" in by_name["max_position"].detail
    assert by_name["circuit_breaker"].changed and "tripped" in by_name["circuit_breaker"].detail
    assert not by_name["cash_floor"].changed
    assert "risky 0.340 -> 0.200" in by_name["circuit_breaker"].detail
    np.testing.assert_allclose(w, [0.25 * 0.2 / 0.34, 0.0, 0.09 * 0.2 / 0.34, 0.0, 0.0, 0.8])


def test_market_state_sees_stress():
    calm = rng.normal(0.0005, 0.01, (252, 5))
    crash = calm.copy()
    crash[-20:] = rng.normal(-0.02, 0.04, (20, 5))
    assert CALM.market_drawdown < 0.15 and CALM.vol_ratio < 1.5
    stressed = MarketState.from_returns(SYMBOLS, crash)
    assert stressed.market_drawdown > 0.15 and stressed.vol_ratio > 1.75
