"""The correlation graph (data/graph.py) against a straightforward per-date reference written here:
every date's window in a loop, Pearson correlations in exact integer arithmetic (checked against
np.corrcoef), a stable argsort. Random returns with NaNs, dead windows, exact ties (duplicated and
rescaled columns), k >= N, T < lookback, and date blocks of every size; then point in time."""

from __future__ import annotations

import numpy as np
import pytest

from rayfolio.data import graph
from rayfolio.data.graph import correlation_neighbours

GRID = 2**25  # the standardised returns' rounding grid the graph documents


def reference(returns: np.ndarray, k: int, lookback: int) -> np.ndarray:
    """(T, N) -> (T, N, min(k, N - 1)): per date, the most correlated other assets first, ties and
    undefined correlations (a peer or the asset without returns in the window, or the asset itself)
    in index order; self-loops before a full window and for an asset without returns."""
    t_len, n = returns.shape
    k = max(min(k, n - 1), 0)
    out = np.broadcast_to(np.arange(n)[None, :, None], (t_len, n, k)).copy()
    for t in range(lookback - 1, t_len):
        w = np.nan_to_num(returns[t - lookback + 1 : t + 1])  # (L, N), no return read as 0
        centred = w - w.mean(axis=0)
        norm = np.sqrt((centred**2).sum(axis=0))  # (N,)
        dead = norm == 0
        z = centred / np.where(dead, 1.0, norm)
        q = np.rint(z * GRID).astype(np.int64)  # (L, N) integers: the products below are exact
        products = q.T @ q  # (N, N) int64
        live = ~dead
        if live.sum() >= 2:  # the rounding moves a correlation by at most the documented 2 sqrt(L) / GRID / 2
            np.testing.assert_allclose(products[np.ix_(live, live)] / GRID**2, np.corrcoef(w[:, live].T),
                                       rtol=0, atol=np.sqrt(lookback) / GRID + 1e-12)  # fmt: skip
        for a in np.flatnonzero(live):
            score = np.where(live, products[a].astype(np.float64), -np.inf)
            score[a] = -np.inf
            out[t, a] = np.argsort(-score, kind="stable")[:k]
    return out


def returns_with_edge_cases(rng: np.random.Generator, t_len: int, n: int) -> np.ndarray:
    """Gaussian returns with scattered NaNs, an asset listed late and one delisted early (dead
    windows), a duplicated column and a rescaled copy of another (exact ties)."""
    r = rng.normal(scale=0.01, size=(t_len, n))
    r[rng.random((t_len, n)) < 0.03] = np.nan
    if n >= 6:
        r[: t_len // 2, 1] = np.nan  # listed late
        r[t_len // 3 :, 2] = np.nan  # delisted
        r[:, 4] = r[:, 0]  # duplicate: ties with asset 0, broken by index
        r[:, 5] = 2.0 * r[:, 3]  # same standardised window as asset 3
    return r


@pytest.mark.parametrize(
    ("t_len", "n", "k", "lookback"),
    [(90, 12, 3, 20), (90, 12, 11, 20), (90, 12, 30, 20), (70, 40, 5, 15), (60, 7, 2, 60), (30, 7, 2, 40),
     (40, 2, 3, 10), (40, 1, 3, 10)],
)  # fmt: skip
def test_equals_the_per_date_reference(t_len, n, k, lookback):
    returns = returns_with_edge_cases(np.random.default_rng(t_len * n + k), t_len, n)
    got = correlation_neighbours(returns, k, lookback)
    want = reference(returns, k, lookback)
    assert got.dtype == np.int64 and got.shape == (t_len, n, max(min(k, n - 1), 0))
    np.testing.assert_array_equal(got, want)


def test_date_blocks_of_any_size_give_the_same_graph(monkeypatch):
    returns = returns_with_edge_cases(np.random.default_rng(3), 80, 9)
    whole = correlation_neighbours(returns, 4, 20)
    for entries in (1, 81 * 2, 81 * 7):  # one date per block, 2, 7
        monkeypatch.setattr(graph, "_BLOCK_ENTRIES", entries)
        np.testing.assert_array_equal(correlation_neighbours(returns, 4, 20), whole)
    np.testing.assert_array_equal(whole, reference(returns, 4, 20))


def test_edge_cases_read_as_documented():
    returns = returns_with_edge_cases(np.random.default_rng(5), 90, 12)  # asset 1 listed at 45, 2 gone at 30
    nb = correlation_neighbours(returns, 3, 20)
    others = np.arange(12)
    assert (nb[:19] == others[None, :, None]).all()  # no full window yet: self-loops
    assert (nb[19:45, 1] == 1).all()  # no returns in the window: a self-loop
    assert (nb[19:45, others != 1] != 1).all()  # ... and never a peer's neighbour while live ones remain
    assert (nb[49:, 2] == 2).all() and (nb[49:, others != 2] != 2).all()  # delisted: the same
    assert (nb[19:, 4, 0] == 0).all() and (nb[19:, 0, 0] == 4).all()  # a duplicate correlates 1
    assert (nb[19:, 5, 0] == 3).all() and (nb[19:, 3, 0] == 5).all()  # and so does a rescaled copy


def test_point_in_time():
    """Change every return after date t: the graph up to t does not move."""
    rng = np.random.default_rng(9)
    returns = returns_with_edge_cases(rng, 120, 15)
    before = correlation_neighbours(returns, 4, 30)
    changed = returns.copy()
    changed[71:] = rng.normal(size=(49, 15))
    after = correlation_neighbours(changed, 4, 30)
    np.testing.assert_array_equal(after[:71], before[:71])
    assert (after[71:] != before[71:]).any()  # the test can fail: the future did change the graph
