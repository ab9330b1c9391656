"""Forecaster shapes, permutation equivariance, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfolio.data.graph import correlation_neighbours, edge_index, sector_neighbours
from rayfolio.training.models import MODEL_FAMILIES, build_model
from rayfolio.training.panel import Normalizer, windows

B, W, N, F, H = 3, 16, 6, 5, 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_output_shape_and_gradients(family):
    model = build_model(family, {"n_features": F, "n_horizons": H})
    x = torch.randn(B, W, N, F, requires_grad=True)
    out = model(x, torch.randint(0, N, (B, N, 2)))
    assert out.shape == (B, N, H)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_permuting_assets_permutes_outputs(family):
    model = build_model(family, {"n_features": F, "n_horizons": H}).eval()
    x = torch.randn(B, W, N, F)
    neighbours = torch.randint(0, N, (B, N, 3))
    perm = torch.randperm(N)
    inverse = torch.argsort(perm)
    # Asset i of the permuted panel is asset perm[i]; its neighbours are relabelled too.
    permuted_neighbours = inverse[neighbours[:, perm]]
    with torch.no_grad():
        out = model(x, neighbours)
        out_permuted = model(x[:, :, perm], permuted_neighbours)
    torch.testing.assert_close(out_permuted, out[:, perm], atol=1e-5, rtol=1e-5)


def test_graph_changes_gat_output_but_not_lstm():
    x = torch.randn(1, W, N, F)
    a, b = torch.zeros(1, N, 1, dtype=torch.long), torch.ones(1, N, 1, dtype=torch.long)
    gat = build_model("gat", {"n_features": F, "n_horizons": H}).eval()
    lstm = build_model("lstm", {"n_features": F, "n_horizons": H}).eval()
    with torch.no_grad():
        assert not torch.allclose(gat(x, a), gat(x, b))
        torch.testing.assert_close(lstm(x, a), lstm(x, b))


def test_neighbours_are_past_only_and_most_correlated():
    rng = np.random.default_rng(0)
    common = rng.normal(size=(200, 1))
    returns = np.concatenate([common + 0.1 * rng.normal(size=(200, 2)), rng.normal(size=(200, 3))], axis=1)
    nb = correlation_neighbours(returns, k=1, lookback=60)
    assert nb.shape == (200, 5, 1)
    assert (nb[59:, 0, 0] == 1).all() and (nb[59:, 1, 0] == 0).all()  # the correlated pair finds each other
    assert (nb[:59, :, 0] == np.arange(5)).all()  # no full window yet: self-loops
    changed = returns.copy()
    changed[120:] = rng.normal(size=(80, 5))
    np.testing.assert_array_equal(correlation_neighbours(changed, 1, 60)[:120], nb[:120])
    assert edge_index(nb[100]).shape == (2, 5)


@pytest.mark.parametrize("family", list(MODEL_FAMILIES))
def test_no_look_ahead_through_window_or_graph(family):
    """Change every feature and return after date t: predictions at t do not move."""
    rng = np.random.default_rng(1)
    t_len, t = 120, 80
    raw = rng.normal(size=(t_len, N, F)).astype(np.float32)
    returns = rng.normal(size=(t_len, N))
    changed_raw, changed_returns = raw.copy(), returns.copy()
    changed_raw[t + 1 :] = rng.normal(size=(t_len - t - 1, N, F))
    changed_returns[t + 1 :] = rng.normal(size=(t_len - t - 1, N))
    model = build_model(family, {"n_features": F, "n_horizons": H}).eval()

    def predict(features, rets):
        norm = Normalizer.fit(features[:60])  # fitted on a training window before t
        x = torch.from_numpy(windows(norm.transform(features), np.array([t]), W))
        nb = torch.from_numpy(correlation_neighbours(rets, k=2, lookback=30)[[t]])
        with torch.no_grad():
            return model(x, nb)

    torch.testing.assert_close(predict(changed_raw, changed_returns), predict(raw, returns), atol=0, rtol=0)


def test_sector_neighbours_stay_in_sector_and_pad_with_self():
    sectors = np.array(["a", "b", "a", "a", "c"])
    nb = sector_neighbours(sectors, k=2)
    assert nb.shape == (5, 2)
    for i, row in enumerate(nb):
        assert all(sectors[j] == sectors[i] for j in row)
        assert (i in row) == (i in (1, 4))  # only the assets alone in their sector loop to themselves
    assert set(nb[0]) == {2, 3}


def test_training_graph_adds_sector_peers(tiny_panel, tiny_splitter):
    from rayfolio.training.config import TrainConfig
    from rayfolio.training.train import prepare_training_data

    assert tiny_panel.sectors is not None  # the synthetic panel carries sectors
    config = TrainConfig(window=10, graph_k=3, graph_sector_k=2)
    data = prepare_training_data(tiny_panel, tiny_splitter, config)
    assert data.neighbours.shape[2] == 5
    peers = data.neighbours[100, :, 3:]
    assert (tiny_panel.sectors[peers] == tiny_panel.sectors[:, None]).all()
