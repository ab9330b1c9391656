"""Expected gradients in batches: every asset's expected return at every horizon of a date in one
pass of each forecaster, and the policy's weights of a few assets, without SHAP's loop over outputs.

Expected gradients (Erion et al. 2021; what ``shap.GradientExplainer`` estimates) attribute
f(x) - E_r f(r) over a background of reference inputs r:

    phi_j(x) = E_{r ~ background, alpha ~ U(0, 1)} [ (x_j - r_j) * df/dx_j (r + alpha (x - r)) ]

``shap.GradientExplainer`` draws (r, alpha) at random, per output, and runs a forward and a backward
pass per output and batch of 50. Here:

- the draws are fixed (``draws``): every background row m times, so the base value is exactly the
  background's mean, with the midpoints of m equal strata of [0, 1] as alphas: per row, the midpoint
  rule for the path integral of the gradient, which equals f(x) - f(r). Completeness (contributions
  + base = value) then holds to the quadrature's error, not to a random sample's: the stated
  tolerance is 10% of the largest |value - base| of the date and horizon at 16 rows x 8 (tested on
  tiny nets; the quickstart figures below). The same date gives the same numbers wherever and
  whenever it is computed: no random state at all;
- each forecaster is split into an asset-wise encoder and a head (``member_parts``): the LSTM and the
  Transformer read each asset's window on its own (the head is the identity); the GAT's GRU does,
  then its graph layers mix the assets. One backward pass per encoder output channel gives
  d(encoding of asset j)/d(window of asset j) for every asset j at once; the heads and the ensemble's
  z-scoring (cheap) are differentiated per output and chained on. A date's N x H outputs cost E
  backward passes of each encoder (E = H = 3 for the LSTM and the Transformer, the hidden size for
  the GAT) instead of N x H (60 on the quickstart models).

Each date is one forward over its own samples: its numbers never depend on which dates were asked
with it (the ensemble's rule, training/ensemble.py), and batching dates was slower per sample here
(512 rows cost 1.4-1.5x per row what 128 do, out of cache).

Measured on the quickstart models (3 forecasters, 20 assets, 18 features, windows of 20, 16
background dates), one thread of this busy 2-core machine, CPU seconds:

- speed per (date, horizon) at 128 samples: shap.GradientExplainer 9.6-10.1 s; here 0.75-0.97 s
  (2.2-2.9 s, median 2.5 s, for a date's three horizons): ~11x. The policy part (PPO or SAC, 20
  assets, 128 samples): 13-41 ms here, ~300 ms with shap at 100 samples;
- completeness, 10 dates over the last 1,500, largest |sum - (value - base)| / largest |value - base|:
  5-day median 0.5%, max 0.7%; 20-day median 4.3%, max 7.4% (at most 2.6e-4 against expected returns
  up to 2.6e-2). shap at 128 samples on 3 of those dates: 10-22%. (The 60-day forecast has no
  validation skill, so its expected return is the cross-section's mean for every asset: nothing to
  attribute, every contribution 0.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.explain.attributions import HOLDINGS, OTHER_ASSETS, Attribution, PolicyWeights, shared_scaled_features
from rayfolio.training.ensemble import ForecastEnsemble, split_indices
from rayfolio.training.panel import Panel

METHOD = "eg-midpoint-1"  # the estimator's name in the store's key: a change to its numbers gets a new one


@dataclass(frozen=True)
class Method:
    """What, besides the models, fixes an explanation's numbers."""

    per_row: int  # samples per background row (m)
    background: tuple[str, ...]  # the background's dates (ISO)

    @property
    def samples(self) -> int:
        return self.per_row * len(self.background)

    def key(self) -> str:
        dates = hashlib.sha256(",".join(self.background).encode()).hexdigest()[:12]
        return f"{METHOD},m={self.per_row},rows={len(self.background)},bg={dates}"


def per_row(samples: int, rows: int) -> int:
    """Samples per background row for at least ``samples`` in all."""
    return max(1, -(-samples // rows))


def method_for(panel: Panel, background: np.ndarray, samples: int) -> Method:
    """The method explaining with ``background`` (date indices of ``panel``) and >= ``samples`` samples."""
    return Method(per_row(samples, len(background)), tuple(iso(panel.dates[d]) for d in background))


def training_background(panel: Panel, splits: SplitConfig, history: int, size: int) -> np.ndarray:
    """``size`` date indices spread evenly over the training split, each with ``history`` days of
    windows behind it: the reference inputs of every explanation (the base value is their mean)."""
    train = split_indices(panel, PurgedDateSplitter(splits, purge=max(panel.horizons)), "train")
    train = train[train >= history - 1]
    return train[np.linspace(0, len(train) - 1, size).astype(int)]


def draws(rows: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows*m,) background row indices (each row m times) and alphas (each row's m alphas the
    midpoints of m equal strata of [0, 1]: the midpoint rule for the path integral)."""
    return np.repeat(np.arange(rows), m), (np.tile(np.arange(m), rows) + 0.5) / m


# ----- the forecasters as asset-wise encoders and heads -----------------------------------------


@dataclass(frozen=True)
class MemberParts:
    """A forecaster as ``head(encode(x), neighbours)``: ``encode`` (B, W, N, F) -> (B, N, E) reads
    each asset's window on its own; ``head`` (B, N, E), (B, N, k) -> (B, N, H) may mix assets."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def member_parts(model: nn.Module) -> MemberParts:
    """The split of one forecaster (tests check head(encode(x)) equals the model, and that each
    asset's encoding reads only its own window)."""
    from rayfolio.training.models import GATForecaster, LSTMForecaster, TransformerForecaster
    from rayfolio.training.models.gat import batched_edges

    if isinstance(model, LSTMForecaster | TransformerForecaster):  # every asset encoded independently
        return MemberParts(lambda x: model(x), lambda e, _: e)
    if isinstance(model, GATForecaster):

        def encode(x: torch.Tensor) -> torch.Tensor:
            b, w, n, f = x.shape
            _, last = model.encoder(x.permute(0, 2, 1, 3).reshape(b * n, w, f))
            return last[-1].view(b, n, -1)

        def head(e: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
            b, n, d = e.shape
            h = e.reshape(b * n, d)
            if neighbours.shape[-1] > 0:
                edges = batched_edges(neighbours)
                for conv, norm in zip(model.convs, model.norms, strict=True):
                    h = norm(h + torch.relu(conv(h, edges)))
            return model.head(h).view(b, n, -1)

        return MemberParts(encode, head)
    raise TypeError(f"no asset-wise split for {type(model).__name__}: add one to explain/expected_gradients.py")


def _combine(ensemble: ForecastEnsemble, scores: list[torch.Tensor], mean: np.ndarray, scale: np.ndarray):
    """(B, N, H) raw scores per member -> (B, N, H) expected returns: z-scored across assets,
    IC-weighted, Grinold-scaled (training/ensemble.py, in torch)."""
    total = 0.0
    for m, s in enumerate(scores):
        s = s.double()
        sd = s.std(dim=1, keepdim=True, unbiased=False)
        z = torch.where(sd > 0, (s - s.mean(dim=1, keepdim=True)) / sd.clamp_min(1e-300), 0.0)
        total = total + torch.from_numpy(ensemble.weights[m]) * z
    return torch.from_numpy(mean) + torch.from_numpy(scale) * total


def _scores(ensemble: ForecastEnsemble, t: int, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, W, N, F) -> each member's (B, N, H) raw scores, its seeds averaged."""
    out = []
    for f in ensemble.forecasters:
        neighbours = torch.from_numpy(f.neighbours[t]).expand(x.shape[0], *f.neighbours[t].shape)
        window = x[:, -f.window :]
        out.append(torch.stack([model(window, neighbours) for model in f.models]).mean(0))
    return out


@torch.enable_grad()
def explain_date(ensemble: ForecastEnsemble, t: int, background_dates: np.ndarray, feature_names: Sequence[str],
                 method: Method) -> dict[int, Attribution]:  # fmt: skip
    """Grouped expected-gradient attributions of every asset's expected return at date index ``t``,
    one ``Attribution`` per horizon (groups: the features, then "other assets")."""
    scaled = shared_scaled_features(ensemble)
    window = ensemble.min_history
    mean, dispersion = ensemble._trailing(t)
    scale = ensemble.ic * dispersion
    x = torch.from_numpy(scaled[t - window + 1 : t + 1])  # (W, N, F)
    background = torch.from_numpy(np.stack([scaled[d - window + 1 : d + 1] for d in background_dates]))
    with torch.no_grad():
        values = _combine(ensemble, _scores(ensemble, t, x[None]), mean, scale)[0].numpy()  # (N, H)
        base = _combine(ensemble, _scores(ensemble, t, background), mean, scale).mean(dim=0).numpy()
    rows, alpha = draws(len(background), method.per_row)
    reference = background[rows]
    delta = x[None] - reference  # (S, W, N, F)
    points = reference + torch.from_numpy(alpha).float()[:, None, None, None] * delta
    # Per encoder (one per seed of each member): its encoding, as a leaf for the heads' passes, and
    # q[s, k, j, f] = sum over the window of delta * d(encoding k of asset j)/d(inputs of asset j).
    leaves, qs = [], []
    for f in ensemble.forecasters:
        inputs = points[:, -f.window :].detach().requires_grad_(True)
        d = delta[:, -f.window :]
        for model in f.models:
            parts = member_parts(model)
            encoded = parts.encode(inputs)  # (S, N, E)
            channels = encoded.shape[-1]
            q = [(d * torch.autograd.grad(encoded[..., k].sum(), inputs, retain_graph=k < channels - 1)[0]).sum(dim=1)
                 for k in range(channels)]  # fmt: skip
            leaves.append((parts, encoded.detach().requires_grad_(True)))
            qs.append(torch.stack(q, dim=1).double())  # (S, E, N, F)
    # The heads and the ensemble (cheap): per output (asset i, horizon h), d output / d each encoding.
    scores, at = [], 0
    for f in ensemble.forecasters:
        neighbours = torch.from_numpy(f.neighbours[t]).expand(len(points), *f.neighbours[t].shape)
        seeds = [parts.head(e, neighbours) for parts, e in leaves[at : at + len(f.models)]]
        scores.append(torch.stack(seeds).mean(0))
        at += len(f.models)
    out = _combine(ensemble, scores, mean, scale)  # (S, N, H)
    n, horizons = out.shape[1], out.shape[2]
    outputs = [(i, h) for h in range(horizons) for i in range(n)]
    encodings = [e for _, e in leaves]
    chained = [[] for _ in encodings]  # per encoder: (O, S, N, E)
    for o, (i, h) in enumerate(outputs):
        grads = torch.autograd.grad(out[:, i, h].sum(), encodings, retain_graph=o < len(outputs) - 1)
        for c, g in zip(chained, grads, strict=True):
            c.append(g)
    asset = torch.tensor([i for i, _ in outputs])
    own = torch.zeros(len(outputs), len(feature_names), dtype=torch.float64)  # phi of asset i's own features
    total = torch.zeros(len(outputs), dtype=torch.float64)  # phi of every input
    for c, q in zip(chained, qs, strict=True):
        c = torch.stack(c).double()  # (O, S, N, E)
        own += torch.einsum("osk,oskf->of", c[torch.arange(len(outputs)), :, asset], q[:, :, asset].permute(2, 0, 1, 3))
        total += torch.einsum("osjk,skj->o", c, q.sum(dim=-1))
    own = (own / len(points)).numpy().reshape(horizons, n, -1)
    total = (total / len(points)).numpy().reshape(horizons, n)
    symbols = tuple(str(s) for s in ensemble.panel.symbols)
    groups = (*feature_names, OTHER_ASSETS)
    explained = {}
    for h, horizon in enumerate(ensemble.panel.horizons):
        contributions = np.concatenate([own[h], (total[h] - own[h].sum(axis=1))[:, None]], axis=1)
        explained[horizon] = Attribution(symbols, values[:, h], base[:, h], groups, contributions)
    return explained


# ----- the policy: a few assets per request -------------------------------------------------------


@torch.enable_grad()
def explain_policy_assets(agent, t: int, current: np.ndarray, background_dates: np.ndarray, assets: Sequence[int],
                          method: Method) -> Attribution:  # fmt: skip
    """Grouped expected-gradient attributions of the target weights of ``assets`` (indices) chosen
    by ``agent`` (an AgentAllocator) at ``t`` holding ``current``: one backward pass per asset.
    Groups as ``explain_policy``'s: the features, "other assets", "current holdings"."""
    env = agent.env
    module = PolicyWeights(agent.policy, env._tradable[t], env.config).eval()
    obs = torch.from_numpy(env.observation(t, current))
    cash = np.eye(env.n_assets + 1)[-1]  # the background starts from cash, as explain_policy's
    background = torch.from_numpy(np.stack([env.observation(d, cash) for d in background_dates]))
    assets = list(assets)
    with torch.no_grad():
        values = module(obs[None])[0].numpy()[assets]
        base = module(background).mean(dim=0).numpy()[assets]
    rows, alpha = draws(len(background), method.per_row)
    reference = background[rows]
    delta = obs[None] - reference
    points = (reference + torch.from_numpy(alpha).float()[:, None] * delta).requires_grad_(True)
    out = module(points)  # (S, N)
    w, n, f = env.window, env.n_assets, len(env.market.feature_names)
    contributions = np.zeros((len(assets), f + 2))
    for a, i in enumerate(assets):
        (grad,) = torch.autograd.grad(out[:, i].sum(), points, retain_graph=a < len(assets) - 1)
        phi = (delta.double() * grad.double()).mean(dim=0).numpy()
        windows, holdings = phi[: w * n * f].reshape(w, n, f), phi[w * n * f :]
        own = windows[:, i].sum(axis=0)
        contributions[a, :f] = own
        contributions[a, f] = windows.sum() - own.sum()
        contributions[a, f + 1] = holdings.sum()
    symbols = tuple(str(env.market.symbols[i]) for i in assets)
    return Attribution(symbols, values, base, (*env.market.feature_names, OTHER_ASSETS, HOLDINGS), contributions)


def completeness_error(explained: Attribution) -> np.ndarray:
    """(N,) |sum of contributions - (value - base)|: 0 for exact attributions; here the midpoint
    rule's error (each contribution is computed from gradients, none is a remainder)."""
    return np.abs(explained.contributions.sum(axis=1) - (explained.values - explained.base_values))


def iso(date) -> str:
    """A panel date as YYYY-MM-DD (the store's file names and the method's key)."""
    return str(np.datetime64(date, "D"))
