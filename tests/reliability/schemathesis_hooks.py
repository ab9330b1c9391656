"""The one documented rule of the API that JSON Schema cannot state: a portfolio's weights
sum to at most 1 (the rest is cash). Generated bodies that break it are dropped, in every
generation mode: the API refuses them (tests/serving/test_schemas.py), and a schema-valid body
that breaks it is not the valid data schemathesis means."""

from __future__ import annotations

import schemathesis


@schemathesis.hook
def filter_body(context, body) -> bool:
    portfolio = body.get("portfolio") if isinstance(body, dict) else None
    if not isinstance(portfolio, dict):
        return True
    weights = [w for w in portfolio.values() if isinstance(w, int | float) and not isinstance(w, bool)]
    return len(weights) < len(portfolio) or sum(weights) <= 1.0
