"""Asset graphs from past-only rolling return correlation (one graph per date).

For date t the graph links each asset to the ``k`` assets whose daily returns
correlated most with its own over the ``lookback`` days ending at t. Only
returns dated <= t enter, so the graph, like the features, is point in time.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view


def correlation_neighbours(returns: np.ndarray, k: int, lookback: int = 60) -> np.ndarray:
    """Top-k most correlated other assets per date.

    Parameters
    ----------
    returns : (T, N) daily returns, NaN where an asset has none (read as 0).
    k : neighbours per asset (capped at N - 1).
    lookback : trailing days in each correlation window.

    Returns
    -------
    (T, N, k) int64 neighbour indices, most correlated first, ties to the lower index; before a
    full window exists, or for an asset with no returns in the window, an asset's neighbours are
    itself (self-loops carry no information but keep shapes fixed). Peers whose correlation is
    undefined (no returns in the window) and the asset itself rank below every defined
    correlation, among themselves by index.

    Correlations are exact products of standardised returns rounded to multiples of 2^-25 (see
    ``_top_k``), so the graph does not depend on the BLAS kernel or thread count. Cost: O(T N^2 L)
    multiply-adds in BLAS plus O(k T N^2) for the selection, in date blocks of ``_BLOCK_ENTRIES``
    correlations so that memory stays bounded whatever T is.
    """
    t_len, n = returns.shape
    k = min(k, n - 1)
    out = np.broadcast_to(np.arange(n)[None, :, None], (t_len, n, max(k, 1))).copy()
    if k < 1 or t_len < lookback:
        return out[..., :k] if k >= 1 else out[..., :0]
    win = sliding_window_view(np.nan_to_num(returns), lookback, axis=0)  # (T-L+1, N, L), a view
    block = max(1, _BLOCK_ENTRIES // (n * n))
    for start in range(0, win.shape[0], block):
        out[lookback - 1 + start : lookback - 1 + start + block] = _top_k(win[start : start + block], k)
    return out


# Correlations held at once, (block, N, N) float64: 32 MB.
_BLOCK_ENTRIES = 4 << 20
# Standardised returns are rounded onto multiples of 1 / _GRID before their products (see _top_k).
_GRID = float(2**25)
# Below every correlation (|corr| <= 1 up to rounding) and above "taken" (-inf): undefined ones and self.
_UNDEFINED = -2.0


def _top_k(win: np.ndarray, k: int) -> np.ndarray:
    """(B, N, L) return windows -> (B, N, k) most correlated other assets."""
    n = win.shape[1]
    centred = win - win.mean(axis=2, keepdims=True)  # (B, N, L), contiguous
    norm = np.sqrt((centred**2).sum(axis=2))  # (B, N)
    dead = norm == 0  # no returns in the window: no defined correlation, a self-loop
    # Standardise each window once (unit-norm rows), then round onto multiples of 2^-25: the
    # correlations are one batched BLAS product q q^T, and an exact one. Every product is a multiple
    # of 2^-50 and, by Cauchy-Schwarz, every partial sum, in whatever order the product adds, is at most
    # |q_a| |q_b| <= (1 + sqrt(L) 2^-26)^2 < 2: it fits float64's 53 bits. So equal windows give
    # equal correlations (ties are real ties, broken by index) and the graph does not depend on the
    # BLAS kernel or thread count. The rounding moves a correlation by <= 2 sqrt(L) 2^-26 (2.3e-7 at
    # L = 60; ~1e-8 typically), below a float32 panel's own precision.
    z = centred / np.where(dead, 1.0, norm)[:, :, None]  # (B, N, L) in the input's dtype, dead rows 0
    q = np.rint(z.astype(np.float64) * _GRID) / _GRID  # (B, N, L) float64
    # torch's batched product, not numpy's: numpy's OpenBLAS threads each small (N, L) x (L, N)
    # product, which on a busy 2-core machine ran 16x slower than one thread; torch follows
    # torch.set_num_threads / OMP_NUM_THREADS like the models do. Exact either way (above).
    corr = torch.bmm(torch.from_numpy(q), torch.from_numpy(q).transpose(1, 2)).numpy()  # (B, N, N)
    if not np.isfinite(q).all():  # returns overflowing to inf: their correlations are undefined
        corr[np.isnan(corr)] = _UNDEFINED
    np.copyto(corr, _UNDEFINED, where=dead[:, None, :])
    corr[:, np.arange(n), np.arange(n)] = _UNDEFINED  # never your own neighbour, unless nothing else is left
    # k rounds of "the largest not yet taken": argmax returns the first maximum, so ties go to the
    # lower index (the order of a stable sort), and each round is one vectorised pass over the block.
    top = np.empty((*corr.shape[:2], k), dtype=np.int64)
    for j in range(k):
        top[:, :, j] = corr.argmax(axis=2)
        np.put_along_axis(corr, top[:, :, j, None], -np.inf, axis=2)
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
