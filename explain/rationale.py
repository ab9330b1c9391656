"""Plain-language rationale per asset from grouped attributions.

Features are gathered into themes (momentum, trend, RSI, volatility, volume,
other assets, holdings); the two themes that moved the value most are named
with their direction, and RSI and the 20-day return are quoted when they are
among them.
"""

from __future__ import annotations

import numpy as np

DISCLAIMER = (
    "Model output for information only, not investment advice. Attributions describe what the models "
    "responded to, not why prices will move; past patterns may not persist."
)

THEMES = {
    "momentum": ("ret_5", "ret_20", "ret_60", "mom_12_1", "ema_ratio_20", "ema_ratio_50", "ret_1"),
    "trend": ("sma_ratio_20", "sma_ratio_50", "sma_ratio_200", "macd", "macd_signal", "bb_pctb_20"),
    "RSI": ("rsi_14",),
    "volatility": ("vol_20", "vol_60", "atr_14", "vol_regime", "mdd_60"),
    "volume": ("obv", "volume_ratio_20"),
    "other assets": ("other assets",),
    "current holdings": ("current holdings",),
}


def themes(groups: tuple[str, ...], contributions: np.ndarray) -> dict[str, float]:
    """(G,) contributions of one asset -> theme -> summed contribution (unknown features: 'other features')."""
    out: dict[str, float] = {}
    for group, value in zip(groups, contributions, strict=True):
        theme = next((t for t, members in THEMES.items() if group in members), "other features")
        out[theme] = out.get(theme, 0.0) + float(value)
    return out


def describe(theme: str, contribution: float, raw: dict[str, float]) -> str:
    direction = "raised" if contribution > 0 else "lowered"
    if theme == "RSI" and np.isfinite(raw.get("rsi_14", np.nan)):
        rsi = raw["rsi_14"]
        state = "overbought" if rsi > 70 else "oversold" if rsi < 30 else "neutral"
        return f"RSI {rsi:.0f} ({state}) {direction} it"
    if theme == "momentum" and np.isfinite(raw.get("ret_20", np.nan)):
        return f"momentum (20-day return {np.expm1(raw['ret_20']):+.1%}) {direction} it"
    if theme == "other assets":
        return f"the behaviour of related assets (correlation peers, the cross-section) {direction} it"
    if theme == "current holdings":
        return f"your current holdings {direction} it"
    return f"{theme} {direction} it"


def rationale(symbol: str, what: str, value: float, by_theme: dict[str, float], raw: dict[str, float]) -> str:
    """One or two sentences: the value and its two largest drivers."""
    ranked = sorted(by_theme.items(), key=lambda kv: -abs(kv[1]))[:2]
    drivers = "; ".join(describe(theme, c, raw) for theme, c in ranked if abs(c) > 0)
    return f"{symbol}: {what} {value:+.2%}." + (f" Main drivers: {drivers}." if drivers else "")
