"""Transformer encoder over each asset's feature window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class TransformerConfig:
    n_features: int
    n_horizons: int = 3
    hidden: int = 32  # d_model
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    pooling: Literal["last", "mean"] = "last"  # last: causal attention, read the final step
    max_window: int = 512


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed positional encoding of Vaswani et al."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TransformerForecaster(nn.Module):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"hidden ({config.hidden}) must be a multiple of heads ({config.heads})")
        self.config = config
        self.embed = nn.Linear(config.n_features, config.hidden)
        self.register_buffer("positions", sinusoidal_positions(config.max_window, config.hidden), persistent=False)
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, 2 * config.hidden, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(config.hidden), nn.Linear(config.hidden, config.n_horizons))

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, W, N, F) -> (B, N, H)."""
        b, w, n, f = x.shape
        seq = self.embed(x.permute(0, 2, 1, 3).reshape(b * n, w, f)) + self.positions[:w]  # (B*N, W, D)
        causal = self.config.pooling == "last"
        mask = nn.Transformer.generate_square_subsequent_mask(w, device=x.device) if causal else None
        h = self.encoder(seq, mask=mask, is_causal=causal)  # (B*N, W, D)
        pooled = h[:, -1] if causal else h.mean(dim=1)
        return self.head(pooled).view(b, n, -1)
