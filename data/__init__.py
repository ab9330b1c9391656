"""Price panels in, point-in-time feature store out: schema and validation,
sources, the Ray Data feature pipeline, the store, and purged splits.

Names load on first use (PEP 562): importing one module of this package (say the
store, to read features) does not import Ray Data."""

import importlib

_WHERE = {
    "FEATURES": "features", "compute_symbol_features": "features",
    "build_feature_dataset": "pipeline", "build_features_local": "pipeline",
    "PanelValidationError": "schema",
    "SyntheticSource": "sources", "file_source": "sources", "make_source": "sources", "sp500_source": "sources",
    "PurgedDateSplitter": "splits", "SplitConfig": "splits", "SplitError": "splits",
    "FeatureStore": "store", "FeatureStoreError": "store", "prepare_feature_store": "store",
    "SyntheticPanelConfig": "synthetic",
    "validate_before_ray": "validate",
}  # fmt: skip
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rayfolio.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rayfolio.data.{_WHERE[name]}"), name)
