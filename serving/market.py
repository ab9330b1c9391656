"""The served universe and calendar: which symbols and dates a request may name, and the
market's returns and per-date risk state, from data dated <= each date."""

from __future__ import annotations

import datetime as dt

import numpy as np

from rayfolio.data.conventions import CASH, TRADING_DAYS_PER_YEAR
from rayfolio.serving.cache import LruCache
from rayfolio.serving.errors import RequestError
from rayfolio.serving.risk import MarketState
from rayfolio.serving.schemas import RecommendationRequest
from rayfolio.training.panel import Panel

LOOKBACK = TRADING_DAYS_PER_YEAR  # trading days behind risk estimates: one year


class Market:
    """Symbol and date validation, daily returns and the risk filters' per-date market state."""

    def __init__(self, panel: Panel, min_history: int, cache_size: int = 256) -> None:
        self.dates = panel.dates
        self.symbols = tuple(str(s) for s in panel.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.returns = panel.daily_returns()  # (T, N) simple returns, 0 where missing
        self.first_servable = max(min_history, LOOKBACK) - 1
        self._states: LruCache[int, MarketState] = LruCache(cache_size)

    def history(self, t: int) -> np.ndarray:
        """(LOOKBACK, N) daily returns ending at t."""
        return self.returns[t - LOOKBACK + 1 : t + 1]

    def state(self, t: int) -> MarketState:
        """The risk filters' view of the market at t (covariance, stress), computed once per date. A cached
        state holds O(N) of its own: its covariance reads ``history(t)``, a view of ``returns``."""
        return self._states.get(t, lambda day: MarketState.from_returns(self.symbols, self.history(day)))

    def date_index(self, as_of: dt.date | None) -> int:
        """The last trading date on or before ``as_of`` (default: the latest)."""
        if as_of is None:
            return len(self.dates) - 1
        t = int(np.searchsorted(self.dates, np.datetime64(as_of, "D"), side="right")) - 1
        if t < self.first_servable or as_of > self.dates[-1].astype(dt.date):
            raise RequestError(
                "invalid_as_of",
                f"as_of {as_of} is outside the servable dates {self.dates[self.first_servable]} .. {self.dates[-1]}",
            )
        return t

    def check_symbols(self, symbols, where: str) -> None:
        unknown = sorted(set(symbols) - set(self.index))
        if unknown:
            raise RequestError("unknown_symbol", f"unknown symbols in {where}: {', '.join(unknown[:10])}")

    def weights_vector(self, portfolio: dict[str, float]) -> np.ndarray:
        """(N+1,) current weights, cash last."""
        self.check_symbols(portfolio, "portfolio")
        w = np.zeros(len(self.symbols) + 1)
        for symbol, weight in portfolio.items():
            w[self.index[symbol]] = weight
        w[-1] = 1.0 - w[:-1].sum()
        return w

    def validate(self, request: RecommendationRequest) -> tuple[int, np.ndarray]:
        """(date index, current weights) of a request, or a RequestError naming what is wrong."""
        self.check_symbols(request.risk_profile.exclude, "risk_profile.exclude")
        return self.date_index(request.as_of), self.weights_vector(request.portfolio)

    def named(self, weights: np.ndarray) -> dict[str, float]:
        """{symbol: weight} of the non-zero positions, and cash."""
        named = {s: float(w) for s, w in zip(self.symbols, weights[:-1], strict=True) if abs(w) > 1e-12}
        named[CASH] = float(weights[-1])
        return named
