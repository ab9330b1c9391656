"""Graph attention over assets (PyTorch Geometric) on top of a temporal encoder.

Each date is one graph: nodes are assets, edges link an asset to the assets
whose past returns correlated most with its own (``rayfolio.data.graph``).
A GRU encodes each asset's window; GAT layers then mix in its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.nn import GATv2Conv


@dataclass(frozen=True)
class GATConfig:
    n_features: int
    n_horizons: int = 3
    hidden: int = 32
    layers: int = 1  # GAT layers after the temporal encoder
    heads: int = 2
    dropout: float = 0.1


class GATForecaster(nn.Module):
    def __init__(self, config: GATConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.GRU(config.n_features, config.hidden, batch_first=True)
        self.convs = nn.ModuleList(
            GATv2Conv(config.hidden, config.hidden // config.heads, heads=config.heads, dropout=config.dropout)
            for _ in range(config.layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(config.hidden) for _ in range(config.layers))
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, config.n_horizons))

    def forward(self, x: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, W, N, F), neighbours: (B, N, k) asset indices -> (B, N, H)."""
        b, w, n, f = x.shape
        _, last = self.encoder(x.permute(0, 2, 1, 3).reshape(b * n, w, f))
        h = last[-1]  # (B*N, D)
        if neighbours is not None and neighbours.shape[-1] > 0:
            edges = batched_edges(neighbours)
            for conv, norm in zip(self.convs, self.norms, strict=True):
                h = norm(h + torch.relu(conv(h, edges)))  # residual keeps the asset's own signal
        return self.head(h).view(b, n, -1)


def batched_edges(neighbours: torch.Tensor) -> torch.Tensor:
    """(B, N, k) neighbour tables -> (2, B*N*k) edge_index of B disjoint graphs
    (graph b's nodes are b*N .. b*N + N - 1), neighbour -> asset."""
    b, n, k = neighbours.shape
    offset = (torch.arange(b, device=neighbours.device) * n)[:, None, None]
    source = (neighbours + offset).reshape(-1)
    target = (torch.arange(n, device=neighbours.device)[None, :, None] + offset).expand(b, n, k).reshape(-1)
    return torch.stack([source, target])
