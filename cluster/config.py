"""The run configuration: one typed model per stage, loaded from YAML."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rayfolio.data.config import DataConfig
from rayfolio.data.splits import SplitConfig, WalkForwardConfig
from rayfolio.data.yaml_files import read_yaml_mapping
from rayfolio.rl.config import AllocationConfig
from rayfolio.training.config import ForecastersConfig


class ConfigError(ValueError):
    """A config file that cannot be read or breaks the schema; names file and field."""


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = None  # None: local dev mode (or RAY_ADDRESS when set)
    num_cpus: int | None = None  # local mode only; None: all cores


class RunConfig(BaseModel):
    """Everything ``rayfolio run`` needs. The defaults are configs/quickstart.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "quickstart"
    runs_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    splits: SplitConfig = SplitConfig(
        train_end=dt.date(2014, 12, 31),
        validation_start=dt.date(2015, 1, 1),
        validation_end=dt.date(2016, 12, 31),
        test_start=dt.date(2017, 1, 1),
    )
    # Expanding-window refits after the first (``splits``): the quickstart refits every 3 years.
    walk_forward: WalkForwardConfig = WalkForwardConfig(refit_every=36)
    forecasters: ForecastersConfig = ForecastersConfig()
    allocation: AllocationConfig = AllocationConfig()
    registry: Path | None = None  # None: RAYFOLIO_REGISTRY, else runs/registry
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _forecasts_for_the_agents(self) -> RunConfig:
        if self.allocation.env.forecast_features and not self.forecasters.families:
            raise ValueError(
                "allocation.env.forecast_features needs forecasts: list forecasters.families, or turn it off"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def store_dir(self, override: Path | None = None) -> Path:
        """The feature store a command reads or writes: ``--store``/``--out``, else ``runs/<name>/features``."""
        return Path(override or self.run_dir / "features").resolve()

    def registry_root(self, override: Path | None = None) -> Path:
        """The model registry: ``--registry``, else the config's, else ``RAYFOLIO_REGISTRY``, else
        ``runs/registry``. The one place this is decided."""
        return Path(override or self.registry or os.environ.get("RAYFOLIO_REGISTRY") or "runs/registry").resolve()


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config at ``path`` (None: the built-in quickstart defaults) with
    ``overrides`` (nested sections, e.g. from command-line flags) merged in,
    validated as a whole before anything runs. Every problem is named by its
    key and what is allowed, in one ``ConfigError``."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        raw = read_yaml_mapping(path, "config", ConfigError)
    try:
        return RunConfig.model_validate(_merged(raw, overrides or {}))
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        raise ConfigError(f"{path or 'command-line options'}: {problems}") from None


def check_env_features(config: RunConfig, available: Iterable[str], where: str) -> None:
    """Refuse agents' features that ``where`` (a source or a store) does not have:
    ``atr_14``, say, needs high and low prices. Checked before any stage runs."""
    available = list(available)
    missing = [name for name in config.allocation.env.features if name not in available]
    if missing:
        raise ConfigError(
            f"allocation.env.features: {', '.join(map(repr, missing))} not available from {where} "
            f"(it has: {', '.join(available)})"
        )


def check_index_file(config: RunConfig) -> None:
    """A benchmark index file named in the config must exist before any stage runs."""
    index = config.allocation.backtest.index
    if index not in (None, "auto", "sp500") and not Path(index).is_file():
        raise ConfigError(f"allocation.backtest.index: no such file {index}")


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        inner = out.get(key)
        out[key] = _merged(inner, value) if isinstance(value, dict) and isinstance(inner, dict) else value
    return out


def _problem(error: dict[str, Any]) -> str:
    """``allocation.agents.algorithms.0: Input should be 'ppo' or 'sac' (got 'dqn')``: the key, the rule, the value."""
    key = ".".join(map(str, error["loc"])) or "config"
    message = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    got = f" (got {value!r})" if isinstance(value, str | int | float) and error["type"] != "missing" else ""
    return f"{key}: {message}{got}"
