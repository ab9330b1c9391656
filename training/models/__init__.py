"""Return forecasters. Each maps feature windows (B, W, N, F) to forward-return
scores (B, N, H) and is built from its own typed config."""

from rayfolio.training.models.gat import GATConfig, GATForecaster
from rayfolio.training.models.lstm import LSTMConfig, LSTMForecaster
from rayfolio.training.models.transformer import TransformerConfig, TransformerForecaster

MODEL_FAMILIES = {
    "lstm": (LSTMConfig, LSTMForecaster),
    "transformer": (TransformerConfig, TransformerForecaster),
    "gat": (GATConfig, GATForecaster),
}


def build_model(family: str, config: dict):
    """A forecaster of ``family`` from a plain dict (as stored with checkpoints)."""
    try:
        config_cls, model_cls = MODEL_FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(MODEL_FAMILIES)}") from None
    return model_cls(config_cls(**config))


__all__ = [
    "MODEL_FAMILIES",
    "GATConfig",
    "GATForecaster",
    "LSTMConfig",
    "LSTMForecaster",
    "TransformerConfig",
    "TransformerForecaster",
    "build_model",
]
