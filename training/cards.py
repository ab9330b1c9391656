"""Typed registry cards: one pydantic model per artifact kind, holding everything
needed to rebuild and serve that artifact. Stored as ``card.json`` in each
version (covered by the manifest's checksums) and validated, strictly, on load.

``Card`` is a union discriminated by ``kind``. An exported forecaster (ONNX,
``rayfolio models export``) keeps its forecaster's card, marked by ``export``
(``ExportedRuntimes``): it is the same model, served by another runtime, so it stays a
"forecaster" wherever production forecasters are looked up (the ensemble, the explainer).

The allocator cards hold rl's typed ``EnvConfig``, ``Algorithm`` and ``TiltParams``
(rl/config.py, plain pydantic models over data/): the one import from rl/ in
training/, because the registry that validates every kind of card lives here.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import MANIFEST, FeatureStore, sha256_file
from rayfolio.rl.config import Algorithm, EnvConfig, TiltParams
from rayfolio.training.config import Family, TrainConfig
from rayfolio.training.panel import NormalizeKind, Normalizer

CardKind = Literal["forecaster", "allocator", "tilt"]
# The kinds that allocate a portfolio (what serving and ``best_allocator`` choose among):
# a trained policy, or the forecast tilt around 1/N.
ALLOCATOR_KINDS: tuple[CardKind, ...] = ("allocator", "tilt")
TILT_NAME = "tilt-allocator"

# Cards are read back from files anyone with write access could edit: no coercion
# (a "32" is not 32), no unknown keys, and a loaded card cannot be changed.
_STRICT = ConfigDict(strict=True, frozen=True, extra="forbid", ser_json_inf_nan="constants")


def forecaster_name(family: Family) -> str:
    """The registry name of a family's forecaster, e.g. ``lstm-forecaster``."""
    return f"{family}-forecaster"


def allocator_name(algorithm: Algorithm) -> str:
    """The registry name of an algorithm's allocator, e.g. ``ppo-allocator``."""
    return f"{algorithm}-allocator"


class NormalizerParams(BaseModel):
    """A fitted ``Normalizer``'s kind and per-feature statistics, in feature order.

    Cards written before ``kind`` existed hold zscore statistics and load as such.
    """

    model_config = _STRICT

    kind: NormalizeKind = "zscore"
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _one_value_per_feature(self) -> NormalizerParams:
        sizes = {len(self.lower), len(self.upper), len(self.mean), len(self.std)}
        if len(sizes) != 1:
            raise ValueError(f"lower, upper, mean and std must have one value per feature, got lengths {sizes}")
        return self

    @classmethod
    def of(cls, normalizer: Normalizer) -> NormalizerParams:
        return cls.model_validate(normalizer.to_dict(), strict=False)  # numpy floats -> tuples of float

    def normalizer(self) -> Normalizer:
        return Normalizer.from_dict(self.model_dump())


class Calendar(BaseModel):
    """The data an artifact was fitted on: the feature store's date range and hash,
    and the split boundaries (what it never saw while being chosen)."""

    model_config = _STRICT

    start: dt.date
    end: dt.date
    splits: SplitConfig
    purge: int = Field(ge=0)  # trading days dropped before each split boundary
    feature_store_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the store's manifest.json

    @classmethod
    def of(cls, store: FeatureStore, splitter: PurgedDateSplitter) -> Calendar:
        start, end = (pd.Timestamp(d).date() for d in store.manifest["date_range"])
        return cls(start=start, end=end, splits=splitter.config,
                   purge=splitter.purge, feature_store_sha256=sha256_file(store.path / MANIFEST))  # fmt: skip


class GraphSettings(BaseModel):
    """The per-date asset graph a GAT reads (sequence models ignore it)."""

    model_config = _STRICT

    k: int  # correlation neighbours
    lookback: int  # trading days of returns behind each correlation
    sector_k: int  # same-sector neighbours, when the store has sectors


class _CardBase(BaseModel):
    model_config = _STRICT

    kind: CardKind  # each kind narrows this to its own literal; first in card.json
    feature_names: tuple[str, ...]  # the store's features the artifact reads, in its input order
    normalizer: NormalizerParams  # fitted on the training split, one value per feature
    symbols: tuple[str, ...]  # the universe it was fitted on
    calendar: Calendar

    @model_validator(mode="after")
    def _normalizer_matches_features(self) -> _CardBase:
        if len(self.normalizer.mean) != len(self.feature_names):
            raise ValueError(
                f"normalizer has {len(self.normalizer.mean)} features, feature_names {len(self.feature_names)}"
            )
        return self


ExportRuntime = Literal["onnx", "onnx-int8"]


class ExportedRuntimes(BaseModel):
    """What an exported version adds to its forecaster's card: the ONNX runtimes its files serve
    (training/onnx_runtime.py names them) and the version whose torch weights they came from."""

    model_config = _STRICT

    source_version: str = Field(pattern=r"^v\d{4,}$")
    runtimes: tuple[ExportRuntime, ...] = Field(min_length=1)
    opset: int = Field(ge=1)


class ForecasterCard(_CardBase):
    """A return forecaster: its family, the training config it was chosen with
    (architecture, window, graph), and the horizons it forecasts."""

    kind: Literal["forecaster"] = "forecaster"
    train: TrainConfig
    horizons: tuple[int, ...]
    export: ExportedRuntimes | None = None  # set on versions `rayfolio models export` registers

    @property
    def name(self) -> str:
        return forecaster_name(self.train.family)

    @property
    def family(self) -> Family:
        return self.train.family

    @property
    def window(self) -> int:
        return self.train.window

    @property
    def graph(self) -> GraphSettings:
        t = self.train
        return GraphSettings(k=t.graph_k, lookback=t.graph_lookback, sector_k=t.graph_sector_k)

    def model_kwargs(self) -> dict:
        """The architecture ``build_model(family, ...)`` takes."""
        return self.train.model_kwargs(len(self.feature_names), len(self.horizons))


class ExtractorKwargs(BaseModel):
    """``AssetWindowExtractor``'s sizes."""

    model_config = _STRICT

    window: int
    n_assets: int
    n_features: int
    embedding: int


class PolicyKwargs(BaseModel):
    """The SB3 ``policy_kwargs`` that rebuild the policy network (the extractor class is added in rl/agents)."""

    model_config = _STRICT

    net_arch: tuple[int, ...]
    features_extractor_kwargs: ExtractorKwargs

    def as_sb3(self) -> dict:
        return {
            "net_arch": list(self.net_arch),
            "features_extractor_kwargs": self.features_extractor_kwargs.model_dump(),
        }


class AllocatorCard(_CardBase):
    """An allocation policy: its algorithm, the environment it acts in (window,
    calendar, costs), its network and the chosen hyperparameters."""

    kind: Literal["allocator"] = "allocator"
    algorithm: Algorithm
    env: EnvConfig
    policy_kwargs: PolicyKwargs
    params: dict[str, int | float]  # the chosen trial's hyperparameters and seed

    @property
    def name(self) -> str:
        return allocator_name(self.algorithm)


class TiltCard(BaseModel):
    """The forecast tilt around 1/N (rl/tilt.py): its chosen parameters, the forecasts it
    reads (the ensemble of ``forecasters`` at ``horizon``) and the calendar and costs it was
    chosen under. No weights, features or normalizer: the parameters are the whole model."""

    model_config = _STRICT

    kind: Literal["tilt"] = "tilt"
    params: TiltParams
    horizon: int = Field(ge=1)  # trading days: the forecast horizon whose cross-sectional z-score it reads
    rebalance_every: int = Field(ge=1)  # trading days between decisions (the holding period)
    cost_bps: float = Field(ge=0)  # per unit of turnover, in the validation backtest it was chosen on
    forecasters: dict[str, str] = Field(min_length=1)  # ensemble member (registry name) -> version, at selection
    symbols: tuple[str, ...] = Field(min_length=1)  # the universe it was chosen on
    calendar: Calendar

    @property
    def name(self) -> str:
        return TILT_NAME


Card = Annotated[ForecasterCard | AllocatorCard | TiltCard, Field(discriminator="kind")]
CARD = TypeAdapter(Card)
