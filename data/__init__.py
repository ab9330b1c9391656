"""Price panels in, point-in-time feature store out: schema and validation,
sources, the Ray Data feature pipeline, the store, and purged splits."""

from rayfolio.data.features import FEATURES, compute_symbol_features
from rayfolio.data.pipeline import build_feature_dataset, build_features_local
from rayfolio.data.schema import PanelValidationError
from rayfolio.data.sources import SyntheticSource, file_source, make_source, sp500_source
from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.data.store import FeatureStore, FeatureStoreError, prepare_feature_store
from rayfolio.data.synthetic import SyntheticPanelConfig

__all__ = [
    "FEATURES",
    "FeatureStore",
    "FeatureStoreError",
    "PanelValidationError",
    "PurgedDateSplitter",
    "SplitConfig",
    "SyntheticPanelConfig",
    "SyntheticSource",
    "build_feature_dataset",
    "build_features_local",
    "compute_symbol_features",
    "file_source",
    "make_source",
    "prepare_feature_store",
    "sp500_source",
]
