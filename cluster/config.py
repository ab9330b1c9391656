"""The run configuration: one typed model per stage, loaded from YAML."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rayfolio.data.config import DataConfig
from rayfolio.data.splits import SplitConfig
from rayfolio.rl.config import AllocationConfig
from rayfolio.training.stage import ForecastersConfig


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
    forecasters: ForecastersConfig = ForecastersConfig()
    allocation: AllocationConfig = AllocationConfig()
    registry: Path | None = None  # None: RAYFOLIO_REGISTRY, else runs/registry
    ray: RayConfig = RayConfig()

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


def load_config(path: str | Path | None) -> RunConfig:
    """The config at ``path``, or the built-in quickstart defaults when None."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None
