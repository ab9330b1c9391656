"""The OpenAPI document of a serving app, with what its loaded market enforces declared too:
the served symbols (an enum) and the servable dates (a pattern over ISO dates), so that every
request the document allows is one the API can serve, and every one it refuses is outside it."""

from __future__ import annotations

import datetime as dt
import re

from rayfolio.serving.market import Market


def date_range_pattern(first: dt.date, last: dt.date) -> str:
    """A regex matching the ISO dates first..last (with ``format: date`` for calendar validity)."""

    def two(values) -> str:
        return "(?:" + "|".join(f"{v:02d}" for v in values) + ")"

    def year(y: int, months: range, first_day: int | None, last_day: int | None) -> list[str]:
        """Dates of year ``y`` in ``months``: the first month from ``first_day``, the last up to ``last_day``."""
        parts = []
        for m in months:
            lo = first_day if m == months[0] and first_day else 1
            hi = last_day if m == months[-1] and last_day else 31
            parts.append(f"{two([m])}-{two(range(lo, hi + 1))}")
        return [f"{y}-(?:{'|'.join(parts)})"]

    if first.year == last.year:
        alternatives = year(first.year, range(first.month, last.month + 1), first.day, last.day)
    else:
        alternatives = year(first.year, range(first.month, 13), first.day, None)
        if last.year - first.year > 1:
            alternatives.append(f"(?:{'|'.join(str(y) for y in range(first.year + 1, last.year))})-\\d\\d-\\d\\d")
        alternatives += year(last.year, range(1, last.month + 1), None, last.day)
    return "^(?:" + "|".join(alternatives) + ")$"


def declare_market(schema: dict, market: Market) -> dict:
    """``schema`` (FastAPI's document, changed in place and returned) with the market's symbols
    and servable dates declared wherever a request names them."""
    symbols = list(market.symbols)
    first, last = (market.dates[i].astype(dt.date) for i in (market.first_servable, -1))
    dates = {"type": "string", "format": "date", "pattern": date_range_pattern(first, last)}
    names = {"enum": symbols}
    one = "(?:" + "|".join(re.escape(s) for s in symbols) + ")"
    components = schema["components"]["schemas"]
    for model in ("RecommendationRequest", "ExplanationRequest"):
        properties = components[model]["properties"]
        properties["portfolio"]["propertyNames"] = names
        if "anyOf" in properties["as_of"]:  # nullable: the string alternative
            properties["as_of"]["anyOf"] = [dates, {"type": "null"}]
        else:
            properties["as_of"].update(dates)
    components["RiskProfileIn"]["properties"]["exclude"]["items"] = names
    example = {"portfolio": {s: 0.1 for s in symbols[:2]}, "risk_profile": {"risk_tolerance": 0.5, "horizon_days": 20,
               "exclude": symbols[2:3]}, "as_of": None}  # fmt: skip
    components["RecommendationRequest"]["examples"] = [example]
    for parameter in schema["paths"]["/v1/forecasts"]["get"]["parameters"]:
        if parameter["name"] == "symbols":
            parameter["schema"]["anyOf"][0]["pattern"] = f"^{one}(?:,{one})*$"
        if parameter["name"] == "as_of":
            parameter["schema"]["anyOf"][0] = dates
    return schema
