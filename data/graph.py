"""Asset graphs from past-only rolling return correlation (one graph per date).

For date t the graph links each asset to the ``k`` assets whose daily returns
correlated most with its own over the ``lookback`` days ending at t. Only
returns dated <= t enter, so the graph, like the features, is point in time.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def correlation_neighbours(returns: np.ndarray, k: int, lookback: int = 60) -> np.ndarray:
    """Top-k most correlated other assets per date.

    Parameters
    ----------
    returns : (T, N) daily returns, NaN where an asset has none.
    k : neighbours per asset (capped at N - 1).
    lookback : trailing days in each correlation window.

    Returns
    -------
    (T, N, k) int64 neighbour indices; before a full window exists, or for an
    asset with no returns in the window, an asset's neighbours are itself
    (self-loops carry no information but keep shapes fixed).
    """
    t_len, n = returns.shape
    k = min(k, n - 1)
    out = np.broadcast_to(np.arange(n)[None, :, None], (t_len, n, max(k, 1))).copy()
    if k < 1 or t_len < lookback:
        return out[..., :k] if k >= 1 else out[..., :0]
    win = sliding_window_view(np.nan_to_num(returns), lookback, axis=0)  # (T-L+1, N, L), a view
    # Date blocks keep the (block, N, N) correlation tensor near 32M entries.
    block = max(1, (32 << 20) // (n * n))
    for start in range(0, win.shape[0], block):
        out[lookback - 1 + start : lookback - 1 + start + block] = _top_k(win[start : start + block], k)
    return out


def _top_k(win: np.ndarray, k: int) -> np.ndarray:
    """(B, N, L) return windows -> (B, N, k) most correlated other assets."""
    n = win.shape[1]
    centred = win - win.mean(axis=2, keepdims=True)
    norm = np.sqrt((centred**2).sum(axis=2))  # (B, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.einsum("tal,tbl->tab", centred, centred) / (norm[:, :, None] * norm[:, None, :])
    corr = np.nan_to_num(corr, nan=-np.inf)
    corr[:, np.arange(n), np.arange(n)] = -np.inf  # never your own neighbour
    top = np.argsort(-corr, axis=2, kind="stable")[:, :, :k]
    dead = norm == 0  # no returns in the window: fall back to a self-loop
    top[dead] = np.nonzero(dead)[1][:, None]
    return top


def sector_neighbours(sectors: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` other assets of the same sector per asset, (N,) -> (N, k).

    Peers are taken in index order after the asset itself (wrapping around), so
    the choice is fixed and spreads edges across the sector; an asset with fewer
    than ``k`` peers fills the rest with self-loops.
    """
    n = len(sectors)
    out = np.broadcast_to(np.arange(n)[:, None], (n, k)).copy()
    for label in np.unique(sectors):
        members = np.flatnonzero(sectors == label)  # a loop over sectors, not rows
        for j in range(1, min(k, len(members) - 1) + 1):
            out[members, j - 1] = np.roll(members, -j)
    return out


def edge_index(neighbours: np.ndarray) -> np.ndarray:
    """(N, k) neighbour table -> (2, N*k) edges, neighbour -> asset (source, target)."""
    n, k = neighbours.shape
    targets = np.repeat(np.arange(n), k)
    return np.stack([neighbours.reshape(-1), targets])
