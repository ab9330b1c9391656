"""The feature catalogue and the per-symbol feature + label computation.

``compute_symbol_features`` is the Ray Data step: a plain
``dict[str, np.ndarray] -> dict[str, np.ndarray]`` function over one symbol's
rows sorted by date, testable without Ray. The same function serves the Ray
pipeline and the single-process path, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from rayfolio.data import indicators as ind
from rayfolio.data.conventions import TRADING_DAYS_PER_YEAR


class SymbolData:
    """One symbol's price arrays, plus intermediates several features share
    (vol_20, the MACD lines, Alpha158's window statistics) computed once per symbol.

    The recursive indicators (EMA, Wilder's averages, OBV: each value depends on
    every row before it) go through ``recursive``, which records each running
    series so the store can keep its tail as the symbol's state. An append builds
    ``SymbolData`` over the stored tail plus the new rows with ``resume``: the tail
    rows of each running series come from the state and only the new rows are
    computed, continued from the last stored value, so they equal a full rebuild's.
    Windowed features need no state: their windows fit inside the tail.
    """

    def __init__(self, prices: Mapping[str, np.ndarray], resume: Resume | None = None) -> None:
        self.prices = prices
        self.resume = resume
        self.running: dict[str, np.ndarray] = {}  # recursion name -> series of shape (T,)
        self._memo: dict[tuple, Any] = {}

    def __getitem__(self, column: str) -> np.ndarray:
        return self.prices[column]

    def vol(self, w: int) -> np.ndarray:
        return self.memo(("vol", w), lambda: ind.realized_vol(self.prices["close"], w))

    def ema(self, w: int) -> np.ndarray:
        return self.recursive(f"ema(close,{w})", self.prices["close"], lambda x, prev: ind.ema(x, w, prev=prev))

    def macd(self) -> tuple[np.ndarray, np.ndarray]:
        def compute() -> tuple[np.ndarray, np.ndarray]:
            line = self.ema(12) - self.ema(26)
            return line, self.recursive("ema(macd,9)", line, lambda x, prev: ind.ema(x, 9, prev=prev))

        return self.memo(("macd",), compute)

    def rsi(self, n: int) -> np.ndarray:
        gains, losses = ind.gains_losses(self.prices["close"])
        gain = self.recursive(f"wilder(gain,{n})", gains, lambda x, prev: ind.wilder_smooth(x, n, 1, prev=prev))
        loss = self.recursive(f"wilder(loss,{n})", losses, lambda x, prev: ind.wilder_smooth(x, n, 1, prev=prev))
        return ind.rsi_from_averages(gain, loss)

    def atr(self, n: int) -> np.ndarray:
        ranges = ind.true_range(self.prices["high"], self.prices["low"], self.prices["close"])
        return self.recursive(f"wilder(true_range,{n})", ranges, lambda x, prev: ind.wilder_smooth(x, n, prev=prev))

    def obv(self) -> np.ndarray:
        flow = ind.obv_flow(self.prices["close"], self.prices["volume"])
        return self.recursive("obv", flow, ind.running_sum)

    def recursive(self, name: str, x: np.ndarray, run: Callable[[np.ndarray, float | None], np.ndarray]) -> np.ndarray:
        """The running series ``run(x, prev)`` over every row (``prev`` None: from the first row).

        Resumed: the stored tail's rows as they were, then ``run`` over the new rows from the
        last stored value.
        """
        if name not in self.running:
            if self.resume is None:
                series = run(x, None)
            else:
                stored = self.resume.running[name]
                series = np.concatenate([stored, run(x[len(stored) :], float(stored[-1]))])
            self.running[name] = series
        return self.running[name]

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per symbol and ``key``: the value several features read."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


@dataclass(frozen=True)
class Resume:
    """A symbol's stored running series over its tail rows (each of shape (L,)), by recursion name."""

    running: Mapping[str, np.ndarray]


Columns = SymbolData


@dataclass(frozen=True)
class FeatureDef:
    """One stored feature: its column name, what it needs, and how it is computed."""

    name: str
    definition: str
    needs: tuple[str, ...]
    compute: Callable[[Columns], np.ndarray]
    warmup: int  # leading rows of a symbol that are NaN by construction


def _ret(h: int) -> FeatureDef:
    return FeatureDef(
        f"ret_{h}", f"log(close[t] / close[t-{h}])", ("close",), lambda c: ind.log_return(c["close"], h), h
    )


def _vol(w: int) -> FeatureDef:
    return FeatureDef(
        f"vol_{w}",
        f"annualised std (ddof=1, x sqrt({TRADING_DAYS_PER_YEAR})) of the last {w} daily log returns",
        ("close",),
        lambda c: c.vol(w),
        w,
    )


def _sma_ratio(w: int) -> FeatureDef:
    return FeatureDef(
        f"sma_ratio_{w}",
        f"close / SMA{w}(close) - 1",
        ("close",),
        lambda c: c["close"] / ind.rolling_mean(c["close"], w) - 1.0,
        w - 1,
    )


def _ema_ratio(w: int) -> FeatureDef:
    return FeatureDef(
        f"ema_ratio_{w}",
        f"close / EMA{w}(close) - 1 (span {w}, adjust=False, NaN for the first {w - 1} rows)",
        ("close",),
        lambda c: c["close"] / c.ema(w) - 1.0,
        w - 1,
    )


def _macd_line(c: Columns) -> np.ndarray:
    return c.macd()[0]


def _macd_signal(c: Columns) -> np.ndarray:
    return c.macd()[1]


def _vol_regime(c: Columns) -> np.ndarray:
    short, long = c.vol(20), c.vol(TRADING_DAYS_PER_YEAR)
    flag = (short > long).astype(np.float64)
    flag[np.isnan(short) | np.isnan(long)] = np.nan
    return flag


FEATURES: tuple[FeatureDef, ...] = (
    *(_ret(h) for h in (1, 5, 20, 60)),
    _vol(20),
    _vol(60),
    *(_sma_ratio(w) for w in (20, 50, 200)),
    *(_ema_ratio(w) for w in (20, 50)),
    FeatureDef(
        "rsi_14",
        "Wilder's RSI over 14 changes (seeded with their simple average), 0..100",
        ("close",),
        lambda c: c.rsi(14),
        14,
    ),
    FeatureDef("macd", "EMA12(close) - EMA26(close) (adjust=False)", ("close",), _macd_line, 25),
    FeatureDef("macd_signal", "EMA9 of macd (adjust=False)", ("close",), _macd_signal, 33),
    FeatureDef(
        "bb_pctb_20",
        "Bollinger %b: (close - lower) / (upper - lower), bands SMA20 +- 2 population std",
        ("close",),
        lambda c: ind.bollinger_pctb(c["close"], 20, 2.0),
        19,
    ),
    FeatureDef(
        "mdd_60",
        "worst peak-to-trough drawdown of close within the last 60 rows (<= 0)",
        ("close",),
        lambda c: ind.rolling_max_drawdown(c["close"], 60),
        59,
    ),
    FeatureDef(
        "mom_12_1",
        f"log(close[t-21] / close[t-{TRADING_DAYS_PER_YEAR}]): 12-month momentum skipping the last month",
        ("close",),
        lambda c: ind.momentum_12_1(c["close"]),
        TRADING_DAYS_PER_YEAR,
    ),
    FeatureDef(
        "vol_regime",
        f"1 when vol_20 > vol_{TRADING_DAYS_PER_YEAR} (the past year's realised vol), else 0; past data only",
        ("close",),
        _vol_regime,
        TRADING_DAYS_PER_YEAR,
    ),
    FeatureDef(
        "atr_14",
        "Wilder's average true range over 14 days, seeded with the mean of the first 14",
        ("high", "low", "close"),
        lambda c: c.atr(14),
        13,
    ),
    FeatureDef(
        "obv",
        "on-balance volume: cumulative +volume on up days, -volume on down days",
        ("close", "volume"),
        lambda c: c.obv(),
        0,
    ),
    FeatureDef(
        "volume_ratio_20",
        "volume / SMA20(volume)",
        ("volume",),
        lambda c: ind.volume_ratio(c["volume"], 20),
        19,
    ),
)

DEFAULT_HORIZONS: tuple[int, ...] = (5, 20, 60)

# basic: the catalogue above. alpha158: basic plus the close-only Alpha158 subset (data/alpha158.py); a
# Panel built from such a store also appends the market-relative features (data/relative.py).
FeatureSet = Literal["basic", "alpha158"]
FEATURE_SETS: tuple[str, ...] = get_args(FeatureSet)


class FeatureSetError(ValueError):
    """A feature set name that is not one of ``FEATURE_SETS``."""


def label_name(h: int) -> str:
    return f"label_fwd_{h}d"


def label_definition(h: int, label_lag: int = 0) -> str:
    if label_lag == 0:
        return f"log(close[t+{h}] / close[t]): forward log return over {h} trading days"
    return (
        f"log(close[t+{label_lag + h}] / close[t+{label_lag}]): forward log return over {h} trading days, "
        f"entered {label_lag} trading day(s) after t"
    )


def feature_catalogue(feature_set: FeatureSet = "basic") -> tuple[FeatureDef, ...]:
    """Every entry of a feature set, whatever the panel's columns."""
    if feature_set == "basic":
        return FEATURES
    if feature_set == "alpha158":
        # Imported here: data/alpha158.py builds on FeatureDef and SymbolData from this module.
        from rayfolio.data.alpha158 import ALPHA158

        return (*FEATURES, *ALPHA158)
    raise FeatureSetError(f"unknown feature set {feature_set!r}: choose one of {', '.join(FEATURE_SETS)}")


def available_features(columns: set[str] | frozenset[str], feature_set: FeatureSet = "basic") -> tuple[FeatureDef, ...]:
    """The entries of ``feature_set`` whose input columns exist in the panel."""
    return tuple(f for f in feature_catalogue(feature_set) if set(f.needs) <= columns)


def compute_symbol_features(
    cols: Mapping[str, np.ndarray], features: tuple[FeatureDef, ...], horizons: tuple[int, ...], label_lag: int = 0
) -> dict[str, np.ndarray]:
    """Features and labels for one symbol (``symbol_rows`` without the running series)."""
    return symbol_rows(cols, features, horizons, label_lag)[0]


def symbol_rows(
    cols: Mapping[str, np.ndarray],
    features: tuple[FeatureDef, ...],
    horizons: tuple[int, ...],
    label_lag: int = 0,
    resume: Resume | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features and labels for one symbol, and its recursive indicators' running series.

    Parameters
    ----------
    cols : mapping of column name -> array of shape (T,)
        One symbol's rows sorted by date: ``date``, ``symbol``, ``close`` and
        any of ``open``, ``high``, ``low``, ``volume``.
    label_lag : int
        Trading days between t and the label's entry: the label at t is
        log(close[t+lag+h] / close[t+lag]).
    resume : the running series over the first L rows (an append: ``cols`` is the stored
        tail of L rows followed by the new ones), or None to compute every row.

    Returns
    -------
    (rows, running): ``rows`` holds arrays of shape (T,): ``date``, ``symbol``, one float64
    column per feature and one ``label_fwd_<h>d`` per horizon; ``running`` the recursive
    series of shape (T,) by name (see ``SymbolData.recursive``).
    """
    prices = {k: np.asarray(cols[k], dtype=np.float64) for k in ("open", "high", "low", "close", "volume") if k in cols}
    data = SymbolData(prices, resume)
    out: dict[str, np.ndarray] = {"date": np.asarray(cols["date"]), "symbol": np.asarray(cols["symbol"])}
    if "sector" in cols:
        out["sector"] = np.asarray(cols["sector"])
    with np.errstate(invalid="ignore", divide="ignore"):
        for feature in features:
            out[feature.name] = feature.compute(data)
        for h in horizons:
            out[label_name(h)] = ind.forward_log_return(prices["close"], h, label_lag)
    return out, data.running
