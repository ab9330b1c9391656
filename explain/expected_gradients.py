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
  then its graph layers mix each asset with its neighbours (``hops`` steps away at most). The heads
  and the ensemble's z-scoring are differentiated once for all outputs, not once per output:
  "other assets" needs d output / d every encoding applied to the path's direction (a forward-mode
  pass), and an asset's own features need d output of i / d encoding of i only: the z-scoring's
  Jacobian in closed form (diagonal + rank two), and the heads' diagonal from one backward pass per
  class of assets that no two reach each other (``colour_classes``: one class for the LSTM and the
  Transformer, <= 2k + 1 for a one-layer GAT whatever N). Back through the encoders: one backward
  pass per encoding channel (E = H = 3 for the LSTM and the Transformer), or for the GAT's wide
  encoding (E = its hidden size) H passes weighted by those derivatives plus one forward-mode pass.
  Encoders run on chunks of assets, heads on chunks of samples (``ROWS_PER_PASS``): time and memory
  grow linearly with N, where one backward pass per (asset, horizon) output and its (outputs,
  samples, N, E) chain grew as N^2 (a GAT date at 400 assets: ~8 GB, twice in float64).
Each date is one forward over its own samples: its numbers never depend on which dates were asked
with it (the ensemble's rule, training/ensemble.py), and batching dates was slower per sample here
(512 rows cost 1.4-1.5x per row what 128 do, out of cache).

Measured on the quickstart models (3 forecasters, 20 assets, 18 features, windows of 20, 16
background dates), one thread of this busy 2-core machine, CPU seconds:

- speed per (date, horizon) at 128 samples: shap.GradientExplainer 9.6-10.1 s; here 0.75-0.97 s
  (2.2-2.9 s, median 2.5 s, for a date's three horizons): ~11x. The policy part (PPO or SAC, 20
  assets, 128 samples): 13-41 ms here, ~300 ms with shap at 100 samples;
- as the universe grows (bench/explain_micro.py: one quickstart-shaped forecaster, random weights,
  one thread, CPU seconds and peak resident GB of the process, ~0.6 GB of it imports and panel),
  before (one backward pass per output) -> now: LSTM 100 assets 3.9 s, 1.5 GB -> 2.8 s, 0.8 GB;
  400 assets 22.4 s, 4.6 GB -> 9.3 s, 1.0 GB. GAT 100 assets 26.5 s, 3.2 GB -> 3.7 s, 0.8 GB;
  200 assets 104 s, 10.5 GB -> 6.7 s, 0.8 GB; 400 assets (~420 s and ~40 GB: not run) -> 12 s,
  1.0 GB. The same numbers to ~1e-6;
- completeness, 10 dates over the last 1,500, largest |sum - (value - base)| / largest |value - base|:
  5-day median 0.5%, max 0.7%; 20-day median 4.3%, max 7.4% (at most 2.6e-4 against expected returns
  up to 2.6e-2). shap at 128 samples on 3 of those dates: 10-22%. (The 60-day forecast has no
  validation skill, so its expected return is the cross-section's mean for every asset: nothing to
  attribute, every contribution 0.)
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from rayfolio.data.splits import PurgedDateSplitter, SplitConfig
from rayfolio.explain.attributions import HOLDINGS, OTHER_ASSETS, Attribution, PolicyWeights, shared_scaled_features
from rayfolio.training.ensemble import ForecastEnsemble, split_indices
from rayfolio.training.panel import Panel

METHOD = "eg-midpoint-1"  # the estimator's name in the store's key: a change to its numbers gets a new one
# (sample, asset) rows one pass reads (an encoder's windows, or a head's graph): bounds a pass's memory
# whatever the universe. 2,048 (16 assets x 128 samples): a quickstart LSTM or GAT date at 400 assets
# peaks ~0.5 GB above the process's own (bench/explain_micro.py), 1.0 GB at 16,384 rows, no faster.
ROWS_PER_PASS = 2_048


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
    each asset's window on its own; ``head`` (B, N, E), (B, N, k) -> (B, N, H) may mix assets, but
    asset i's output reads only the encodings within ``hops`` steps of i in the neighbour table (0:
    its own). ``pullback``: how the own features' attributions go back through the encoder: True,
    H backward passes weighted by d output / d encoding, plus one forward-mode pass for the path's
    d encoding (needs forward AD: the GRU has it, torch's CPU LSTM and flash attention do not), for
    wide encodings (E > H); False, one backward pass per channel (E of them)."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    hops: int
    pullback: bool


def member_parts(model: nn.Module) -> MemberParts:
    """The split of one forecaster (tests check head(encode(x)) equals the model, that each asset's
    encoding reads only its own window, and that each asset's output reads only ``hops`` steps away)."""
    from rayfolio.training.models import GATForecaster, LSTMForecaster, TransformerForecaster
    from rayfolio.training.models.gat import batched_edges

    if isinstance(model, LSTMForecaster | TransformerForecaster):  # every asset encoded independently, E = H
        return MemberParts(lambda x: model(x), lambda e, _: e, hops=0, pullback=False)
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

        # Each graph layer reaches one step further; E is the hidden size (32 on the quickstart) > H.
        return MemberParts(encode, head, hops=len(model.convs), pullback=True)
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
                 method: Method, *, rows_per_pass: int = ROWS_PER_PASS) -> dict[int, Attribution]:  # fmt: skip
    """Grouped expected-gradient attributions of every asset's expected return at date index ``t``,
    one ``Attribution`` per horizon (groups: the features, then "other assets"). Every pass reads at
    most ``rows_per_pass`` (sample, asset) rows (an encoder a chunk of assets, a head a chunk of
    samples): the numbers do not depend on it beyond float rounding."""
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
    samples, n = points.shape[0], points.shape[2]
    assets_per_pass, samples_per_pass = max(1, rows_per_pass // samples), max(1, rows_per_pass // n)
    own = torch.zeros(n, len(scale), len(feature_names), dtype=torch.float64)  # phi of asset i's own features
    total = torch.zeros(n, len(scale), dtype=torch.float64)  # phi of every input
    for m, f in enumerate(ensemble.forecasters):
        inputs, d = points[:, -f.window :], delta[:, -f.window :]
        encoders = [_encode(member_parts(model), inputs, d, assets_per_pass) for model in f.models]
        classes = colour_classes(f.neighbours[t], encoders[0].parts.hops)
        weight = torch.from_numpy(ensemble.weights[m] * scale)  # (H,) the member's z to the expected return
        chained = [[] for _ in encoders]  # per encoder, per chunk of samples: (B, N, H, E) d out[i, h] / d enc[i]
        for start in range(0, samples, samples_per_pass):
            part = slice(start, start + samples_per_pass)
            diagonals, sums = _through_heads(encoders, part, f.neighbours[t], weight, classes)
            total += sums
            for c, diagonal in zip(chained, diagonals, strict=True):
                c.append(diagonal)
        for e, c in zip(encoders, chained, strict=True):
            own += _own(e, torch.cat(c), inputs, d, assets_per_pass)
    own = (own / samples).numpy()  # (N, H, F)
    total = (total / samples).numpy()  # (N, H)
    symbols = tuple(str(s) for s in ensemble.panel.symbols)
    groups = (*feature_names, OTHER_ASSETS)
    explained = {}
    for h, horizon in enumerate(ensemble.panel.horizons):
        contributions = np.concatenate([own[:, h], (total[:, h] - own[:, h].sum(axis=1))[:, None]], axis=1)
        explained[horizon] = Attribution(symbols, values[:, h], base[:, h], groups, contributions)
    return explained


@dataclass(frozen=True)
class Encoded:
    """One encoder (one seed of a member) at every sample and asset of a date."""

    parts: MemberParts
    values: torch.Tensor  # (S, N, E) the encodings at the path's points
    tangent: torch.Tensor  # (S, N, E) Q[s, j, k] = sum over asset j's window of delta * d enc[j, k] / d inputs
    q: torch.Tensor | None  # (S, N, E, F) Q per feature (before the sum over F), when computed per channel


def _encode(parts: MemberParts, points: torch.Tensor, delta: torch.Tensor, per_pass: int) -> Encoded:
    """``per_pass`` assets at a time (an asset's encoding reads only its own window): one forward-mode
    pass for Q, or E backward passes (one per channel) that give q and so Q."""
    values, tangents, qs = [], [], []
    for a in range(0, points.shape[2], per_pass):
        chunk, d = points[:, :, a : a + per_pass], delta[:, :, a : a + per_pass]  # (S, W, n, F)
        if parts.pullback:
            with torch.no_grad(), fwAD.dual_level():
                encoded = fwAD.unpack_dual(parts.encode(fwAD.make_dual(chunk.contiguous(), d.contiguous())))
            values.append(encoded.primal)
            tangents.append(encoded.tangent)
            continue
        inputs = chunk.detach().requires_grad_(True)
        encoded = parts.encode(inputs)  # (S, n, E)
        channels = encoded.shape[-1]
        q = [(d * torch.autograd.grad(encoded[..., k].sum(), inputs, retain_graph=k < channels - 1)[0]).sum(dim=1)
             for k in range(channels)]  # fmt: skip
        values.append(encoded.detach())
        qs.append(torch.stack(q, dim=2))  # (S, n, E, F)
        tangents.append(qs[-1].sum(dim=-1))
    q = torch.cat(qs, dim=1) if qs else None
    return Encoded(parts, torch.cat(values, dim=1), torch.cat(tangents, dim=1), q)


def _through_heads(encoders: list[Encoded], part: slice, neighbours: np.ndarray, weight: torch.Tensor,
                   classes: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:  # fmt: skip
    """One member on the samples ``part``: per encoder, (B, N, H, E) d out[i, h] / d enc[i] (the own
    asset's encoding), and the (N, H) total phi of every output, summed over these samples.

    The member's share of the expected return is out[i] = weight_h * z_i, z the z-scoring across
    assets of its score sc (its heads' mean): d z_i / d sc_l = (delta_il - 1/N - z_i z_l / N) / sd.
    With G = d sc / d enc (the heads, by autograd) and the encoders' Q:
      - total phi of out[i] = sum_(j,k) d out[i] / d enc[j, k] Q[j, k]: one forward-mode pass of the
        heads (G Q), then that closed form;
      - d out[i] / d enc[i] = a (G_ii - (1^T G)_i / N - z_i (z^T G)_i / N), a = weight / sd: backward
        passes of the heads weighted by 1 and by z, and G's diagonal (one backward pass per colour
        class, ``colour_classes``), per horizon.
    (2 + classes) x H backward passes instead of one per (asset, horizon): linear in N."""
    parts = [e.parts for e in encoders]
    encodings, tangents = [e.values[part] for e in encoders], [e.tangent[part] for e in encoders]
    b, n = encodings[0].shape[:2]
    table = torch.from_numpy(neighbours).expand(b, *neighbours.shape)
    leaves = [e.detach().requires_grad_(True) for e in encodings]
    raw = torch.stack([p.head(e, table) for p, e in zip(parts, leaves, strict=True)]).mean(0)  # (B, N, H)
    score = raw.detach().double()
    sd = score.std(dim=1, keepdim=True, unbiased=False)
    z = torch.where(sd > 0, (score - score.mean(dim=1, keepdim=True)) / sd.clamp_min(1e-300), 0.0)  # as _combine
    a = torch.where(sd > 0, weight / sd.clamp_min(1e-300), 0.0)  # (B, 1, H); no spread: z is 0 whatever sc
    with torch.no_grad(), fwAD.dual_level():  # G Q for every output at once
        duals = [fwAD.make_dual(e, q) for e, q in zip(encodings, tangents, strict=True)]
        heads = torch.stack([p.head(d, table) for p, d in zip(parts, duals, strict=True)]).mean(0)
        v = fwAD.unpack_dual(heads).tangent.double()  # (B, N, H)
    total = (a * (v - v.mean(dim=1, keepdim=True) - z * (z * v).mean(dim=1, keepdim=True))).sum(dim=0)  # (N, H)

    def pullback(h: int, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (B, N) -> per encoder (B, N, E)
        return torch.autograd.grad(raw[..., h], leaves, weights.float(), retain_graph=True)

    chained = [torch.zeros(b, n, raw.shape[-1], e.shape[-1]) for e in encodings]
    for h in range(raw.shape[-1]):
        ones, by_z = pullback(h, torch.ones(b, n)), pullback(h, z[..., h])
        diagonal = ones  # one class: no output reads another asset's encoding, so 1^T G is G's diagonal
        if len(classes) > 1:
            diagonal = [torch.zeros_like(e) for e in leaves]
            for members in classes:
                mask = torch.zeros(b, n)
                mask[:, members] = 1.0
                for dg, g in zip(diagonal, pullback(h, mask), strict=True):
                    dg[:, members] = g[:, members]
        ah, zh = a[..., h, None], z[..., h, None]  # (B, 1, 1), (B, N, 1)
        for c, dg, g1, gz in zip(chained, diagonal, ones, by_z, strict=True):
            c[:, :, h] = (ah * (dg.double() - g1.double() / n - zh * gz.double() / n)).float()
    return chained, total


def _own(encoder: Encoded, chained: torch.Tensor, points: torch.Tensor, delta: torch.Tensor, per_pass: int):
    """(N, H, F) phi of each asset's own features through one encoder, summed over the samples, from
    (S, N, H, E) d out[i, h] / d enc[i]: with q, a contraction; else H backward passes of the encoder
    weighted by it, ``per_pass`` assets at a time (sum over s, k of chained * q = delta . that pullback)."""
    if encoder.q is not None:
        return torch.einsum("sihk,sikf->ihf", chained.double(), encoder.q.double())
    horizons = chained.shape[2]
    own = torch.zeros(points.shape[2], horizons, points.shape[3], dtype=torch.float64)
    for a in range(0, points.shape[2], per_pass):
        inputs = points[:, :, a : a + per_pass].detach().requires_grad_(True)
        d = delta[:, :, a : a + per_pass]
        encoded = encoder.parts.encode(inputs)  # (S, n, E)
        weights = chained[:, a : a + per_pass]  # (S, n, H, E)
        for h in range(horizons):
            (grad,) = torch.autograd.grad(encoded, inputs, weights[:, :, h], retain_graph=h < horizons - 1)
            own[a : a + per_pass, h] = (d * grad).double().sum(dim=(0, 1))
    return own


def colour_classes(neighbours: np.ndarray, hops: int) -> list[np.ndarray]:
    """The assets split into classes no two members of which are within ``hops`` steps of each other
    in the (N, k) neighbour table (either direction): weighting a head's outputs by one class, the
    only output of the class that reads asset i's encoding is i's own, so one backward pass per class
    gives the Jacobian's diagonal on that class. Greedy colouring in smallest-last order: at most
    1 + the graph's degeneracy classes, at one hop <= 2k + 1 whatever N (each asset names k
    neighbours, so every subgraph has an asset of degree <= 2k; a plain greedy order can need as many
    as the most-named asset has neighbours)."""
    n = len(neighbours)
    if hops == 0 or neighbours.shape[-1] == 0:
        return [np.arange(n)]
    step = [set() for _ in range(n)]
    for i, row in enumerate(neighbours):
        for j in map(int, row):
            if j != i:
                step[i].add(j)
                step[j].add(i)
    near = step
    for _ in range(hops - 1):
        near = [r.union(*(step[j] for j in r)) - {i} for i, r in enumerate(near)]
    degree = [len(r) for r in near]
    heap = [(d, i) for i, d in enumerate(degree)]
    heapq.heapify(heap)
    removed, order = np.zeros(n, dtype=bool), []
    while heap:  # smallest-last: repeatedly take an asset of least degree among those left
        d, i = heapq.heappop(heap)
        if removed[i] or d != degree[i]:
            continue  # a stale entry
        removed[i] = True
        order.append(i)
        for j in near[i]:
            if not removed[j]:
                degree[j] -= 1
                heapq.heappush(heap, (degree[j], j))
    colour = np.full(n, -1)
    for i in reversed(order):  # each takes the least colour its coloured neighbours do not have
        taken = {int(colour[j]) for j in near[i]}
        colour[i] = next(c for c in range(n) if c not in taken)
    return [np.flatnonzero(colour == c) for c in range(colour.max() + 1)]


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
