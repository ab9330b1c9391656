"""Market conventions every stage shares, defined once (data/ is the lowest folder:
everything above may import it)."""

from __future__ import annotations

TRADING_DAYS_PER_YEAR = 252  # annualisation of daily returns and volatilities; a year of history
CASH = "CASH"  # the cash position's name in weights, trades and reports
DEFAULT_COST_BPS = 10.0  # transaction cost per unit of turnover, in basis points
