"""``PortfolioEnv``: a gymnasium environment over precomputed market arrays.

One step is one rebalance: at date index t the agent sets target weights over
the assets and cash; it pays ``cost_bps`` per unit of turnover on the traded
amount, then holds for ``rebalance_every`` days while the weights drift with
prices. The reward is the log of the net growth of the portfolio's value
(minus an optional risk penalty and ``turnover_penalty`` x turnover, which the
portfolio does not pay). Holding from t to t+k without trading is
buy-and-hold, so the k-day growth of weights w is ``w @ growth[t]`` exactly.

``config.action`` picks how an action in [-1, 1]^(N+1) becomes weights:
"weights" maps it to any long-only portfolio (``long_only_weights``);
"residual" tilts equal weight over the tradable assets, so the zero action is
1/n and the agent learns only departures from it (``residual_weights``).

``step`` only indexes numpy arrays: no pandas, no printing, no files. Reward
normalisation and clipping belong in wrappers (the agents use SB3's
``VecNormalize``); the features arrive standardised on training dates.
"""

from __future__ import annotations

import math
from typing import ClassVar

import gymnasium as gym
import numba
import numpy as np

from rayfolio.rl.config import EnvConfig
from rayfolio.rl.market import MarketData

# Small compiled kernels carry the per-step arithmetic: on 21 weights a numba
# call costs ~1.4 us where the same eight numpy calls cost ~8 us (call overhead,
# not arithmetic), which is most of a step. All are pure functions.


@numba.njit(cache=True)
def long_only_weights(action: np.ndarray, tradable: np.ndarray) -> np.ndarray:
    """(N+1,) action -> target weights proportional to max(a, 0) over tradable
    positions (cash last, always tradable); all cash when nothing is positive."""
    n = action.shape[0]
    target = np.zeros(n)
    total = 0.0
    for i in range(n):
        if tradable[i] and action[i] > 0.0:
            target[i] = action[i]
            total += action[i]
    if total <= 0.0:
        target[n - 1] = 1.0
        return target
    for i in range(n):
        target[i] /= total
    return target


@numba.njit(cache=True)
def residual_weights(action: np.ndarray, tradable: np.ndarray, scale: float) -> np.ndarray:
    """(N+1,) action -> target weights (N+1,) tilted away from equal weight, cash last.

    Over the n tradable risky assets, raw_i = (1/n) max(0, 1 + scale a_i): the
    zero action is 1/n, +-1 moves an asset by ``scale`` x 1/n, and an asset
    drops out once a_i <= -1/scale. The cash action only raises cash: the cash
    share is c = clip(a_cash, 0, 1), and the risky weights are raw rescaled to
    sum to 1 - c (so the zero action holds exactly 1/n each and no cash, and a
    tilt up of one asset is paid for by all the others, not by cash).
    Non-tradable assets get 0; all cash when every raw weight is 0.
    """
    size = action.shape[0]
    target = np.zeros(size)
    n = 0
    for i in range(size - 1):
        if tradable[i]:
            n += 1
    total = 0.0
    for i in range(size - 1):
        if tradable[i]:
            raw = max(0.0, 1.0 + scale * action[i]) / n
            target[i] = raw
            total += raw
    if total <= 0.0:  # every raw weight is 0
        target[size - 1] = 1.0
        return target
    cash = min(max(action[size - 1], 0.0), 1.0)
    risky = (1.0 - cash) / total
    for i in range(size - 1):
        target[i] *= risky
    target[size - 1] = cash
    return target


@numba.njit(cache=True)
def rebalance(target: np.ndarray, weights: np.ndarray, growth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Trade from ``weights`` to ``target`` (N+1,), then hold through ``growth``.

    Returns the drifted weights, the turnover sum |target - weights| over the
    assets (the cash leg is the other side of those trades, not a trade), and
    the gross growth ``target @ growth``.
    """
    n = target.shape[0]
    turnover = 0.0
    gross = 0.0
    held = np.empty(n)
    for i in range(n):
        if i < n - 1:
            turnover += abs(target[i] - weights[i])
        held[i] = target[i] * growth[i]
        gross += held[i]
    if gross > 0.0:
        for i in range(n):
            held[i] /= gross
    return held, turnover, gross


class PortfolioEnv(gym.Env):
    """Observation: the feature window (W, N, F) flattened, then the current
    weights (N assets + cash), float32. Action: (N + 1,) in [-1, 1].

    Parameters
    ----------
    market : MarketData
        Precomputed returns and standardised features.
    config : EnvConfig
    period : (first, last) date indices, inclusive; every step's holding
        period stays inside it.
    random_start : bool
        Training: episodes of ``episode_steps`` from a random date. Evaluation
        (False): one deterministic pass from the period's first date to its end.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, market: MarketData, config: EnvConfig, period: tuple[int, int], *, random_start: bool = True):
        super().__init__()
        self.market, self.config, self.random_start = market, config, random_start
        n, f, w, k = market.n_assets, len(market.feature_names), config.window, config.rebalance_every
        self.n_assets, self.window, self.k = n, w, k
        self.first_decision = max(period[0], w - 1)
        self.last_decision = period[1] - k  # the last date whose k-day holding ends inside the period
        if self.last_decision < self.first_decision:
            raise ValueError(
                f"period {market.dates[period[0]]} .. {market.dates[period[1]]} is too short for a window of {w} "
                f"days and a rebalance every {k} days"
            )
        self._flat = np.ascontiguousarray(market.features.reshape(len(market.dates), n * f))  # (T, N*F)
        self._growth = market.growth(k)  # (T, N+1)
        self._cost = config.cost_bps / 1e4
        self._penalised = config.risk_penalty != "none" and config.risk_coef > 0
        self._short, self._episode_steps = config.allow_short, config.episode_steps
        self._residual, self._scale = config.action == "residual", config.residual_scale
        self._turnover_penalty = config.turnover_penalty
        # Assets that cannot be held over [t, t+k] get a fixed excluded action value.
        listed = np.stack([market.tradable(t, k) for t in range(len(market.dates))]).reshape(-1, n)
        self._tradable = np.hstack([listed, np.ones((len(market.dates), 1), bool)])  # (T, N+1), cash always
        # Bounds from the data (features are winsorised, so finite); weights in the reachable range.
        bound = float(np.abs(self._flat).max()) if self._flat.size else 1.0
        low_w, high_w = (-np.inf, np.inf) if config.allow_short else (0.0, 1.0)  # shorts drift unboundedly
        self.observation_space = gym.spaces.Box(
            np.concatenate([np.full(w * n * f, -bound), np.full(n + 1, low_w)]).astype(np.float32),
            np.concatenate([np.full(w * n * f, bound), np.full(n + 1, high_w)]).astype(np.float32),
            dtype=np.float32,
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n + 1,), np.float32)
        self._t = self.first_decision
        self._weights = self._cash()
        self._value = self._peak = 1.0
        self._steps = 0

    def _cash(self) -> np.ndarray:
        weights = np.zeros(self.n_assets + 1)
        weights[-1] = 1.0
        return weights

    # ----- the two pure maps the backtest shares --------------------------------

    def observation(self, t: int, weights: np.ndarray) -> np.ndarray:
        """(W*N*F + N+1,) float32: features dated t-W+1..t, then the current weights."""
        return np.concatenate((self._flat[t - self.window + 1 : t + 1].ravel(), weights), dtype=np.float32)

    def target_weights(self, action: np.ndarray, t: int) -> np.ndarray:
        """The action at t as target weights (N+1,) summing to 1, cash last.

        Long-only: weights proportional to max(a, 0). Every point of the simplex
        is reachable (a = w maps to w), single assets and exact zeros included,
        unlike a softmax over a box, which keeps weights near 1/N. An action
        with no positive entry holds all cash. Residual: equal weight over the
        tradable assets tilted by the action (``residual_weights``). With
        shorting, the risky weights are the action scaled down to
        ``gross_limit`` and cash takes the rest.
        """
        if self._residual:
            return residual_weights(np.asarray(action, dtype=np.float64), self._tradable[t], self._scale)
        if not self._short:
            return long_only_weights(np.asarray(action, dtype=np.float64), self._tradable[t])
        risky = np.asarray(action, dtype=np.float64)[:-1] * self._tradable[t, :-1]
        gross = np.abs(risky).sum()
        if gross > self.config.gross_limit:
            risky = risky * (self.config.gross_limit / gross)
        return np.append(risky, 1.0 - risky.sum())  # cash < 0 is borrowing

    # ----- gymnasium API --------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "start" in options:
            start = int(options["start"])
            if not self.first_decision <= start <= self.last_decision:
                raise ValueError(
                    f"start {start} outside the decision dates {self.first_decision}..{self.last_decision}"
                )
        elif self.random_start:
            start = int(self.np_random.integers(self.first_decision, self.last_decision + 1))
        else:
            start = self.first_decision
        self._t, self._steps = start, 0
        self._weights = self._cash()
        self._value = self._peak = 1.0
        return self.observation(start, self._weights), {"date_index": start}

    def step(self, action):
        # Plain floats and few array calls: this runs millions of times per search.
        t = self._t
        target = self.target_weights(action, t)
        drifted, turnover, gross = rebalance(target, self._weights, self._growth[t])
        cost = self._cost * turnover
        net = (1.0 - cost) * gross
        if net > 0.0:
            log_growth = math.log(net)
            self._weights, terminated = drifted, False
        else:  # only reachable with shorting: the portfolio is wiped out
            log_growth, terminated = math.log(1e-12), True
            self._weights = self._cash()
        self._value *= max(net, 0.0)
        reward = log_growth - self._turnover_penalty * turnover
        if self._penalised:
            self._peak = max(self._peak, self._value)
            reward -= self._penalty(net)
        self._t = t_next = t + self.k
        self._steps += 1
        truncated = t_next > self.last_decision or (self.random_start and self._steps >= self._episode_steps)
        info = {"date_index": t, "turnover": turnover, "cost": cost, "net_growth": net, "log_growth": log_growth}
        return self.observation(t_next, self._weights), reward, terminated, truncated, info

    def _penalty(self, net: float) -> float:
        if self.config.risk_penalty == "variance":
            return self.config.risk_coef * (net - 1.0) ** 2
        if self.config.risk_penalty == "drawdown":
            return self.config.risk_coef * (1.0 - self._value / self._peak)
        return 0.0
