"""Batched expected gradients: each forecaster's split equals the forecaster (its encoder asset-wise,
its head reaching no further than it says), the draws are stratified and seeded by date, the
attributions equal expected gradients computed from the definition (one backward pass per output)
whatever the chunking, add up to the explained value within the stated tolerance, and agree with
shap.GradientExplainer (the independent implementation) within sampling error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfolio.explain.attributions import (
    HOLDINGS,
    OTHER_ASSETS,
    EnsembleReturn,
    explain_ensemble,
    explain_policy,
    shared_scaled_features,
)
from rayfolio.explain.expected_gradients import (
    colour_classes,
    completeness_error,
    draws,
    explain_date,
    explain_policy_assets,
    member_parts,
    method_for,
)
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import ForecastEnsemble, Forecaster
from rayfolio.training.models import MODEL_FAMILIES, build_model
from rayfolio.training.panel import Normalizer
from tests.serving.conftest import make_engine, make_panel

# The stated tolerance (module docstring of explain/expected_gradients.py): at 16 background rows x 8
# samples, the largest |sum of contributions - (value - base)| is within 10% of the largest |value - base|.
COMPLETENESS = 0.10


@pytest.fixture(scope="module")
def panel():
    return make_panel()


def tiny_ensemble(panel, hidden: int = 8, window: int = 10) -> ForecastEnsemble:
    """An untrained LSTM and GAT (deterministic weights), normalisers on the first 400 days."""
    scaled = Normalizer.fit(panel.features[:400]).transform(panel.features)
    graph = np.tile(np.array([1, 2]), (len(panel.dates), len(panel.symbols), 1))
    forecasters = []
    for seed, (family, ic) in enumerate((("lstm", [0.02, 0.03, 0.01]), ("gat", [0.01, 0.04, 0.02]))):
        torch.manual_seed(seed)
        config = TrainConfig(family=family, hidden=hidden, window=window, layers=1)
        model = build_model(family, config.model_kwargs(len(panel.feature_names), 3)).eval()
        forecasters.append(Forecaster(f"{family}-forecaster", "v0001", (model,), window, scaled, graph,
                                      panel.horizons, np.array(ic)))  # fmt: skip
    return ForecastEnsemble(forecasters, panel)


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_every_family_splits_into_an_assetwise_encoder_and_a_head_equal_to_the_model(family):
    torch.manual_seed(0)
    config = TrainConfig(family=family, hidden=8, window=6, layers=1, heads=2)
    model = build_model(family, config.model_kwargs(5, 3)).eval()
    x = torch.randn(3, 6, 4, 5)
    neighbours = torch.tensor([[1, 2], [0, 3], [3, 1], [2, 0]]).expand(3, 4, 2)
    parts = member_parts(model)
    with torch.no_grad():
        np.testing.assert_allclose(parts.head(parts.encode(x), neighbours).numpy(), model(x, neighbours).numpy(),
                                   rtol=1e-6, atol=1e-7)  # fmt: skip
        # Each asset's encoding reads only its own window: moving asset 2's inputs moves only its encoding.
        moved = x.clone()
        moved[:, :, 2] += 1.0
        before, after = parts.encode(x), parts.encode(moved)
    changed = (before - after).abs().amax(dim=(0, 2))
    assert changed[2] > 0 and torch.all(changed[[0, 1, 3]] == 0)


def within(neighbours: np.ndarray, hops: int) -> np.ndarray:
    """(N, N) bool: j within ``hops`` steps of i in the neighbour table, either direction (matrix powers)."""
    n = len(neighbours)
    step = np.eye(n, dtype=int)
    step[np.repeat(np.arange(n), neighbours.shape[1]), neighbours.reshape(-1)] = 1
    step = ((step + step.T) > 0).astype(int)
    return np.linalg.matrix_power(step, hops) > 0


def hub_table(n: int, k: int, seed: int) -> np.ndarray:
    """(N, k) neighbours: every asset names asset 0 (a hub, as the market-like stock of a correlation
    graph) and k - 1 others at random; asset 1 names itself (an asset without returns)."""
    rng = np.random.default_rng(seed)
    table = np.stack([np.r_[0, rng.choice(np.delete(np.arange(n), [0, i]), k - 1, replace=False)] for i in range(n)])
    table[0, 0], table[1] = 1, 1
    return table


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_each_assets_output_reads_only_the_encodings_within_its_heads_reach(family):
    torch.manual_seed(0)
    config = TrainConfig(family=family, hidden=8, window=6, layers=2, heads=2)
    parts = member_parts(build_model(family, config.model_kwargs(5, 3)).eval())
    table = hub_table(12, 2, seed=3)
    neighbours = torch.from_numpy(table).expand(2, *table.shape)
    e = torch.randn(2, 12, 8 if family == "gat" else 3)
    reach = within(table, parts.hops)
    for moved in (0, 5, 11):  # the hub, and two others
        shifted = e.clone()
        shifted[:, moved] += 1.0
        with torch.no_grad():
            changed = (parts.head(shifted, neighbours) - parts.head(e, neighbours)).abs().amax(dim=(0, 2)) > 0
        assert changed[moved] and not np.any(changed.numpy() & ~reach[moved]), (moved, changed)
        if family == "gat" and moved == 0:
            assert changed[np.any(table == 0, axis=1)].all()  # those naming the hub: a graph head does mix


@pytest.mark.parametrize(("n", "k", "hops"), [(400, 4, 1), (60, 3, 2), (7, 2, 0)])
def test_colour_classes_cover_every_asset_once_none_reaching_another_in_few_classes(n, k, hops):
    table = hub_table(n, k, seed=n)
    classes = colour_classes(table, hops)
    assert np.array_equal(np.sort(np.concatenate(classes)), np.arange(n))
    near = within(table, hops) & ~np.eye(n, dtype=bool) if hops else np.zeros((n, n), dtype=bool)
    for members in classes:
        assert not near[np.ix_(members, members)].any()
    if hops == 1:  # whatever N: the hub is every asset's neighbour, yet it costs one class, not N
        assert len(classes) <= 2 * k + 1
    if hops == 0:
        assert len(classes) == 1


def mixed_ensemble(panel, table: np.ndarray) -> ForecastEnsemble:
    """Every family, a one-layer GAT of two seeds and a two-layer GAT, over one neighbour table."""
    scaled = Normalizer.fit(panel.features[:400]).transform(panel.features)
    graph = np.broadcast_to(table, (len(panel.dates), *table.shape))
    members = (("lstm", 1, 1, [0.02, 0.03, 0.01]), ("transformer", 1, 1, [0.01, 0.02, 0.02]),
               ("gat", 1, 2, [0.01, 0.04, 0.02]), ("gat", 2, 1, [0.03, 0.01, 0.02]))  # fmt: skip
    forecasters = []
    for m, (family, layers, seeds, ic) in enumerate(members):
        config = TrainConfig(family=family, hidden=6, window=4 + m, layers=layers, heads=2)
        models = []
        for seed in range(seeds):
            torch.manual_seed(10 * m + seed)
            models.append(build_model(family, config.model_kwargs(len(panel.feature_names), 3)).eval())
        forecasters.append(Forecaster(f"{family}-{m}", "v0001", tuple(models), 4 + m, scaled, graph, panel.horizons,
                                      np.array(ic)))  # fmt: skip
    return ForecastEnsemble(forecasters, panel)


def by_definition(ensemble: ForecastEnsemble, t: int, background: np.ndarray, method) -> dict[int, np.ndarray]:
    """{horizon: (N, F + 1) contributions}: expected gradients from the definition, with explain_date's
    draws: one backward pass per output (asset, horizon) through the whole ensemble (the torch twin
    of training/ensemble.py), every input's phi, then grouped (own features, the rest)."""
    scaled = shared_scaled_features(ensemble)
    w = ensemble.min_history
    x = torch.from_numpy(scaled[t - w + 1 : t + 1])
    reference = torch.from_numpy(np.stack([scaled[d - w + 1 : d + 1] for d in background]))
    rows, alpha = draws(len(background), method.per_row)
    delta = x[None] - reference[rows]
    points = (reference[rows] + torch.from_numpy(alpha).float()[:, None, None, None] * delta).requires_grad_(True)
    out = {}
    for h, horizon in enumerate(ensemble.panel.horizons):
        value = EnsembleReturn(ensemble, t, h)(points)  # (S, N)
        rows_out = []
        for i in range(value.shape[1]):
            (grad,) = torch.autograd.grad(value[:, i].sum(), points, retain_graph=True)
            phi = (delta.double() * grad.double()).mean(dim=0).numpy()  # (W, N, F)
            own = phi[:, i].sum(axis=0)
            rows_out.append(np.r_[own, phi.sum() - own.sum()])
        out[horizon] = np.array(rows_out)
    return out


def test_chunked_passes_equal_one_pass_and_expected_gradients_by_definition(panel):
    """Every family (the per-channel and the pullback encoder paths, one- and two-hop graph heads with
    a hub, two seeds), chunked down to one asset and one sample per pass, against one pass and against
    one backward pass per output: the same numbers to float rounding."""
    table = hub_table(len(panel.symbols), 2, seed=1)
    ensemble = mixed_ensemble(panel, table)
    background = np.array([300, 340, 380])
    t = 600
    method = method_for(panel, background, 24)
    assert len(colour_classes(table, 1)) > 1  # the diagonal is taken class by class
    whole = explain_date(ensemble, t, background, panel.feature_names, method, rows_per_pass=10**9)
    chunked = explain_date(ensemble, t, background, panel.feature_names, method, rows_per_pass=1)
    reference = by_definition(ensemble, t, background, method)
    for horizon, expected in reference.items():
        size = np.abs(expected).max()
        assert size > 0 and np.abs(expected[:, -1]).max() > 1e-3 * size  # other assets matter here
        for ours in (whole[horizon], chunked[horizon]):
            np.testing.assert_allclose(ours.contributions, expected, rtol=1e-4, atol=1e-5 * size)
        np.testing.assert_allclose(chunked[horizon].contributions, whole[horizon].contributions,
                                   rtol=1e-5, atol=1e-6 * size)  # fmt: skip


def test_draws_use_every_background_row_equally_at_the_midpoints_of_equal_strata():
    rows, alpha = draws(rows=4, m=5)
    assert np.array_equal(np.bincount(rows), [5, 5, 5, 5])
    for r in range(4):
        np.testing.assert_allclose(alpha[rows == r], [0.1, 0.3, 0.5, 0.7, 0.9])


def test_attributions_add_up_to_the_served_expected_return_within_the_stated_tolerance(panel):
    ensemble = tiny_ensemble(panel)
    background = np.linspace(300, 399, 16).astype(int)
    t = 600
    explained = explain_date(ensemble, t, background, panel.feature_names, method_for(panel, background, 128))
    served = ensemble.forecast(t).expected_return
    assert sorted(explained) == list(panel.horizons)
    for h, horizon in enumerate(panel.horizons):
        a = explained[horizon]
        np.testing.assert_allclose(a.values, served[:, h], rtol=1e-6, atol=1e-9)
        assert a.groups == (*panel.feature_names, OTHER_ASSETS) and a.contributions.shape == (6, len(a.groups))
        spread = np.abs(a.values - a.base_values).max()
        assert spread > 0 and completeness_error(a).max() <= COMPLETENESS * spread, (horizon, spread)


def test_batched_expected_gradients_agree_with_shap_within_sampling_error(panel):
    """Two independent shap runs of 1,000 samples each: their mean is a 2,000-sample estimate whose
    squared error, summed over the (asset, group) contributions, is about that of half their
    difference. Ours at 2,000 stratified samples is close to exact, so its summed squared distance to
    shap's mean is about that too: a ratio near 1; a wrong attribution puts it in the thousands."""
    ensemble = tiny_ensemble(panel, hidden=4, window=5)
    background = np.array([300, 330, 360, 390])
    t, horizon = 600, 20
    ours = explain_date(ensemble, t, background, panel.feature_names, method_for(panel, background, 2000))[horizon]
    a, b = (explain_ensemble(ensemble, t, horizon, background, panel.feature_names, nsamples=1000, seed=s)
            for s in (0, 1))  # fmt: skip
    np.testing.assert_allclose(ours.base_values, a.base_values, rtol=1e-5, atol=1e-9)
    shap_mean = (a.contributions + b.contributions) / 2
    noise = (((a.contributions - b.contributions) / 2) ** 2).sum()
    ratio = ((ours.contributions - shap_mean) ** 2).sum() / noise
    assert ratio < 3.0, ratio
    assert np.abs(ours.contributions).max() > 30 * np.sqrt(noise / ours.contributions.size)  # not all noise


def test_the_policy_part_of_a_few_assets_agrees_with_shap_and_adds_up(panel, tmp_path):
    agent = make_engine(panel, tmp_path / "audit.db").allocator
    background = np.arange(300, 400, 25)
    t, current = 600, np.array([0.2, 0.0, 0.1, 0.0, 0.0, 0.0, 0.7])
    ours = explain_policy_assets(agent, t, current, background, [2, 0], method_for(panel, background, 2000))
    assert ours.symbols == (panel.symbols[2], panel.symbols[0]) and ours.groups[-2:] == (OTHER_ASSETS, HOLDINGS)
    np.testing.assert_allclose(ours.values, agent.decide(t, current)[[2, 0]], atol=1e-6)
    spread = np.abs(ours.values - ours.base_values).max()
    assert completeness_error(ours).max() <= COMPLETENESS * spread
    a, b = (explain_policy(agent, t, current, background, nsamples=1000, seed=s) for s in (0, 1))
    shap_mean = ((a.contributions + b.contributions) / 2)[[2, 0]]
    noise = (((a.contributions - b.contributions) / 2)[[2, 0]] ** 2).sum()
    assert ((ours.contributions - shap_mean) ** 2).sum() / noise < 3.0
