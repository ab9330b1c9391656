"""Typed configs of the allocation stage: environment, agents, backtest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rayfolio.data.conventions import DEFAULT_COST_BPS, TRADING_DAYS_PER_YEAR
from rayfolio.data.features import FEATURES, feature_catalogue
from rayfolio.data.relative import RELATIVE_NAMES

Algorithm = Literal["ppo", "sac"]

FLOAT_BYTES = 4  # observations are float32, in the environment and in the agents' buffers

# Few, slow-moving, comparable-across-assets features: the policy sees a
# window of them for every asset, so each one costs window x assets inputs.
DEFAULT_ENV_FEATURES = ("ret_1", "ret_5", "ret_20", "vol_20", "rsi_14", "mdd_60")


class EnvConfig(BaseModel):
    """``PortfolioEnv``: what the agent sees, how it trades, what it is paid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: tuple[str, ...] = DEFAULT_ENV_FEATURES
    window: int = Field(20, ge=1)  # trading days of features per observation
    rebalance_every: int = Field(21, ge=1)  # trading days per step (21: monthly), the backtest's calendar too
    episode_steps: int = Field(24, ge=1)  # steps per training episode (24 monthly steps: two years)
    cost_bps: float = Field(DEFAULT_COST_BPS, ge=0)  # per unit of turnover, charged on the traded amount
    risk_penalty: Literal["none", "variance", "drawdown"] = "none"
    risk_coef: float = Field(0.0, ge=0)
    allow_short: bool = False  # long-only by default
    gross_limit: float = Field(1.5, ge=1.0)  # sum of |risky weights| when shorting is allowed
    # How an action becomes weights. "weights": proportional to max(a, 0), any long-only portfolio.
    # "residual": a tilt away from equal weight (1/n), the baseline the agents otherwise lose to:
    # the zero action holds 1/n, an action of +-1 moves an asset by residual_scale x 1/n (long-only).
    action: Literal["weights", "residual"] = "weights"
    residual_scale: float = Field(1.0, gt=0)  # in units of 1/n; from 1 up, -1/scale is in the box and drops an asset
    # Paid in reward only, per unit of turnover (sum |trade| over assets), on top of cost_bps, which the
    # portfolio pays: lets a search prefer calmer policies without pretending trading costs more.
    turnover_penalty: float = Field(0.0, ge=0)
    # Append the forecasters' ensemble forecast (one channel per label horizon) to every
    # asset's features. Out-of-sample forecasts exist only from the validation split on,
    # so the agents then learn on its first `forecast_train_fraction` and are chosen on the rest.
    forecast_features: bool = False
    forecast_train_fraction: float = Field(0.6, gt=0.0, lt=1.0)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Caught here, when the config is read, rather than as a traceback once the market is built;
        # whether the store holds a feature (atr_14 needs high/low) is checked against the store.
        known = [f.name for f in feature_catalogue("alpha158")] + list(RELATIVE_NAMES)
        unknown = [name for name in value if name not in known]
        if unknown:
            basic = ", ".join(f.name for f in FEATURES)
            raise ValueError(
                f"unknown feature {', '.join(map(repr, unknown))}; allowed: {basic} (data.features: basic), and with "
                "data.features: alpha158 also the alpha_* features and " + ", ".join(RELATIVE_NAMES)
            )
        if not value:
            raise ValueError("at least one feature")
        if len(set(value)) != len(value):
            raise ValueError(f"a feature appears twice in {list(value)}")
        return value

    @model_validator(mode="after")
    def _action_combinations(self) -> EnvConfig:
        # A setting that does nothing is most likely a forgotten one: say so when the config is read.
        if self.action == "residual" and self.allow_short:
            raise ValueError("action 'residual' tilts equal weight long-only; it cannot be combined with allow_short")
        if self.action == "weights" and self.residual_scale != 1.0:
            raise ValueError(f"residual_scale {self.residual_scale} has no effect unless action is 'residual'")
        return self


class AlgorithmSearch(BaseModel):
    """One algorithm's Tune search: random hyperparameters x a grid of seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timesteps: int = Field(20_000, ge=1)  # environment steps per trial
    evaluations: int = Field(4, ge=1)  # validation checkpoints per trial (tune.report each)
    num_samples: int = Field(2, ge=1)  # hyperparameter draws; each runs once per seed
    seeds: tuple[int, ...] = (0, 1)
    lr: tuple[float, float] = (1e-4, 1e-3)  # log-uniform
    gamma: tuple[float, ...] = (0.9, 0.99)
    net_arch: tuple[int, ...] = (64, 64)
    asset_embedding: int = Field(8, ge=1)  # per-asset window embedding width (shared across assets)
    n_envs: int = Field(4, ge=1)
    # PPO
    n_steps: tuple[int, ...] = (128, 256)  # per env and rollout
    batch_size: int = Field(256, ge=2)
    n_epochs: int = Field(5, ge=1)
    ent_coef: tuple[float, float] = (0.0, 0.01)
    # SAC
    buffer_size: int = Field(50_000, ge=1)  # an upper bound: see ``at_scale``
    gradient_steps: int = Field(1, ge=1)  # per env step of all envs together
    learning_starts: int = Field(500, ge=0)
    # The most one trial's buffer may hold (SAC's replay buffer, PPO's rollout buffer), in GB; also the
    # memory each trial declares to Ray, so a node runs only as many trials at once as their buffers fit.
    memory_gb: float = Field(4.0, gt=0)
    # A budget that must shrink with the universe: a gradient step on a batch of observations costs
    # ~N times more at N assets (and more once a batch outgrows the cache: bench/agent_scale.py), so a
    # trial is capped at this many steps x assets; above it, it takes asset_steps / N steps. None: no cap.
    asset_steps: int | None = Field(None, ge=1)

    def at_scale(self, algorithm: Algorithm, observation_floats: int, n_assets: int) -> AlgorithmSearch:
        """The search a trial runs on observations of ``observation_floats`` floats (W*N*F + N+1).

        Two budgets depend on the universe. Steps: with ``asset_steps`` set, a trial takes at most
        asset_steps / N steps (never fewer than learning_starts + evaluations). Buffers: they are
        sized by the observation, which grows with the number of assets, so they are capped. SAC's
        replay buffer holds at most the ``timesteps`` transitions a trial makes (more is memory it
        never fills) and at most what ``memory_gb`` holds at 2 observations a transition (obs and next_obs; SB3's
        ``optimize_memory_usage`` would halve that, but it needs ``handle_timeout_termination=False``,
        which stops bootstrapping where ``episode_steps`` truncates an episode: a different target).
        PPO's rollout length ``n_steps`` is capped so n_steps x n_envs observations, twice (SB3
        flattens a copy), fit in ``memory_gb``. Everything else is the same at every size.
        """
        if self.asset_steps is not None and self.timesteps * n_assets > self.asset_steps:
            # At least one evaluation's worth of steps past learning_starts, so the trial still learns.
            steps = max(self.asset_steps // n_assets, self.learning_starts + self.evaluations)
            if steps < self.timesteps:
                return self.model_copy(update={"timesteps": steps}).at_scale(algorithm, observation_floats, n_assets)
        per_observation = observation_floats * FLOAT_BYTES
        if algorithm == "sac":
            by_memory = int(self.memory_gb * 1e9 // (2 * per_observation))
            size = min(self.buffer_size, self.timesteps, by_memory)
            if size < self.batch_size:
                raise ValueError(
                    f"sac: memory_gb {self.memory_gb:g} holds {by_memory:,} transitions of {observation_floats:,} "
                    f"floats, fewer than batch_size {self.batch_size}; raise memory_gb or shrink the observation"
                )
            return self if size == self.buffer_size else self.model_copy(update={"buffer_size": size})
        by_memory = int(self.memory_gb * 1e9 // (2 * self.n_envs * per_observation))
        if by_memory < 2:
            raise ValueError(
                f"ppo: memory_gb {self.memory_gb:g} holds {by_memory} rollout steps of {self.n_envs} observations "
                f"of {observation_floats:,} floats; raise memory_gb or shrink the observation"
            )
        if max(self.n_steps) <= by_memory:
            return self
        # Order kept: the draws pick from the grid by position.
        return self.model_copy(update={"n_steps": tuple(dict.fromkeys(min(n, by_memory) for n in self.n_steps))})

    def buffer_bytes(self, algorithm: Algorithm, observation_floats: int) -> int:
        """What one trial's buffer holds at most (run ``at_scale`` first): the memory it declares to Ray."""
        per_observation = observation_floats * FLOAT_BYTES
        if algorithm == "sac":
            return 2 * self.buffer_size * per_observation
        return 2 * max(self.n_steps) * self.n_envs * per_observation


class AgentsConfig(BaseModel):
    """The agents the main job trains and how it searches them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithms: tuple[Algorithm, ...] = ("ppo", "sac")
    ppo: AlgorithmSearch = AlgorithmSearch()
    sac: AlgorithmSearch = AlgorithmSearch(
        timesteps=6_000, evaluations=3, lr=(3e-4, 1e-3), seeds=(0,), n_envs=4, asset_steps=600_000
    )
    cpus_per_trial: float = Field(1.0, gt=0)
    max_concurrent_trials: int | None = None  # None: as many as the cluster's CPUs hold


class BacktestConfig(BaseModel):
    """Baselines and the walk-forward test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lookback: int = Field(TRADING_DAYS_PER_YEAR, ge=20)  # trading days of past returns behind every estimator refit
    top_k: int = Field(5, ge=1)  # assets held by the forecast-driven top-k portfolio (a reference)
    # The service's own decision path replayed as strategies ``served_<name>``: a client with this
    # risk tolerance following every recommendation. House limits from ``serve_config`` (a Serve
    # config YAML; null: the packaged cluster/serve_config.yaml).
    served_profiles: dict[str, float] = {"cautious": 0.2, "balanced": 0.5, "aggressive": 0.9}
    serve_config: str | None = None
    index: str | None = "auto"  # "auto": the S&P 500 index when the source is sp500; a CSV/Parquet path; null
    bootstrap_samples: int = Field(2_000, ge=100)
    bootstrap_block: int = Field(10, ge=1)  # mean block length (days) of the stationary bootstrap
    seed: int = 0

    @field_validator("served_profiles")
    @classmethod
    def _tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: t for name, t in value.items() if not 0.0 <= t <= 1.0}
        if bad:
            raise ValueError(f"risk tolerances are 0..1, got {bad}")
        bad_names = [name for name in value if not name.replace("_", "").isalnum()]
        if bad_names:
            raise ValueError(f"profile names are letters, digits and _ (they name strategies), got {bad_names}")
        return value

    @field_validator("index")
    @classmethod
    def _index_kind(cls, value: str | None) -> str | None:
        if value is None or value in ("auto", "sp500") or value.lower().endswith((".csv", ".parquet")):
            return value
        raise ValueError("'auto', 'sp500', null, or a .csv/.parquet file with columns 'date' and the index level")


class TiltParams(BaseModel):
    """One forecast tilt around 1/N (rl/tilt.py): w_i proportional to 1 + k z_i, each at most
    ``cap``, trades smaller than ``band`` skipped. The point of ``TiltConfig``'s grid that is chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: float = Field(ge=0, allow_inf_nan=False)  # tilt per unit of z-score; 0 is equal weight
    band: float = Field(ge=0, allow_inf_nan=False)  # no-trade band, in portfolio weight; 0 trades every difference
    cap: float = Field(gt=0, le=1)  # the most any one asset may hold


class TiltConfig(BaseModel):
    """The grid the forecast tilt is chosen on (by validation Sharpe after costs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    band_grid: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02)
    cap: float = Field(0.25, gt=0, le=1)

    @field_validator("k_grid", "band_grid")
    @classmethod
    def _grid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("at least one value")
        if any(not 0 <= v < float("inf") for v in value):  # NaN fails too
            raise ValueError(f"values must be finite and >= 0, got {list(value)}")
        return value


class AllocationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: EnvConfig = EnvConfig()
    agents: AgentsConfig = AgentsConfig()
    backtest: BacktestConfig = BacktestConfig()
    tilt: TiltConfig = TiltConfig()


def observation_floats(env: EnvConfig, n_assets: int, n_features: int) -> int:
    """The environment's observation size: the (W, N, F) feature window, then N assets + cash weights."""
    return env.window * n_assets * n_features + n_assets + 1


def budget_rows(config: AllocationConfig, n_assets: int, n_features: int | None = None) -> dict[str, str]:
    """The agents' budgets at ``n_assets`` assets as the report prints them (row name -> text), after
    ``AlgorithmSearch.at_scale``. ``n_features``: per asset in the observation (default: the
    configured features; with ``forecast_features`` the market adds one per label horizon)."""
    env = config.env
    floats = observation_floats(env, n_assets, len(env.features) if n_features is None else n_features)
    shape = f"observation {floats:,} floats at {n_assets:,} assets"
    rows = {}
    for algorithm in config.agents.algorithms:
        search = getattr(config.agents, algorithm)
        scaled = search.at_scale(algorithm, floats, n_assets)
        gb = scaled.buffer_bytes(algorithm, floats) / 1e9
        name = algorithm.upper()
        if algorithm == "sac":
            if scaled.buffer_size == search.buffer_size:
                why = "as configured"
            elif scaled.buffer_size == scaled.timesteps:
                why = f"capped by the {scaled.timesteps:,} steps a trial takes; configured {search.buffer_size:,}"
            else:
                why = f"capped by memory_gb {search.memory_gb:g}; configured {search.buffer_size:,}"
            rows[f"{name} replay buffer"] = f"{scaled.buffer_size:,} transitions, {gb:.2f} GB ({why}; {shape})"
        else:
            steps = "/".join(f"{n:,}" for n in scaled.n_steps)
            why = "as configured" if scaled.n_steps == search.n_steps else f"capped by memory_gb {search.memory_gb:g}"
            rows[f"{name} rollout buffer"] = (
                f"n_steps {steps} x {scaled.n_envs} envs, at most {gb:.2f} GB ({why}; {shape})"
            )
        if scaled.timesteps < search.timesteps:
            why = (f"capped by asset_steps {search.asset_steps:,} / {n_assets:,} assets; "
                   f"configured {search.timesteps:,}")  # fmt: skip
        elif search.asset_steps is not None:
            why = f"as configured; capped above {search.asset_steps // search.timesteps:,} assets"
        else:
            why = "as configured, at every universe size"
        rows[f"{name} steps per trial"] = f"{scaled.timesteps:,} ({why})"
    return rows
