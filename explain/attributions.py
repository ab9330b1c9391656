"""SHAP attributions for the ensemble's expected returns and the policy's weights, with
``shap.GradientExplainer``: the independent implementation that the tests hold the service's batched
one (explain/expected_gradients.py, ~11x faster, closer to complete) to, and the shared pieces
(``Attribution``, the policy's torch twin ``PolicyWeights``, the groups).

Both are explained end to end as differentiable torch functions of the
standardised feature window, with ``shap.GradientExplainer`` (expected
gradients) over a background of windows from the training dates:

- expected return of asset i: every forecaster's score, z-scored across
  assets, IC-weighted, scaled as in the ensemble (training/ensemble.py);
- target weight of asset i: the policy's deterministic action mapped to
  long-only weights as in the environment (rl/env.py).

Attributions are grouped by feature: the asset's own features (summed over
the window), "other assets" (everything the model read about the rest of the
universe: cross-asset attention and graph neighbours), and for the policy
"current holdings". By SHAP's completeness they sum, with the base value (the
mean over the background), to the explained value, up to sampling error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shap
import torch
from torch import nn

from rayfolio.rl.config import EnvConfig
from rayfolio.training.ensemble import ForecastEnsemble

OTHER_ASSETS = "other assets"
HOLDINGS = "current holdings"


@dataclass(frozen=True)
class Attribution:
    """One explained value per asset, its base value and grouped contributions."""

    symbols: tuple[str, ...]
    values: np.ndarray  # (N,) the explained output at the explained date
    base_values: np.ndarray  # (N,) its mean over the background
    groups: tuple[str, ...]
    contributions: np.ndarray  # (N, G): contributions[i] sums to values[i] - base_values[i]


class EnsembleReturn(nn.Module):
    """(B, W, N, F) standardised windows -> (B, N) expected h-day log returns: the torch twin of
    training/ensemble.py (each member's seeds averaged, z-scored across assets, validation-IC
    weighted, Grinold-scaled), tested equal to it to 1e-6 so that what is explained is what is served."""

    def __init__(self, ensemble: ForecastEnsemble, t: int, h: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(nn.ModuleList(f.models) for f in ensemble.forecasters)
        self.windows = [f.window for f in ensemble.forecasters]
        self.neighbours = [torch.from_numpy(f.neighbours[t]) for f in ensemble.forecasters]
        self.weights = torch.tensor(ensemble.weights[:, h], dtype=torch.float64)
        mean, dispersion = ensemble._trailing(t)
        self.mean, self.scale = float(mean[h]), float(ensemble.ic[h] * dispersion[h])
        self.h = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for m, seeds in enumerate(self.members):
            window = x[:, -self.windows[m] :]  # each model reads its own window length
            neighbours = self.neighbours[m].expand(x.shape[0], *self.neighbours[m].shape)
            scores = torch.stack([model(window, neighbours)[..., self.h].double() for model in seeds]).mean(0)  # (B, N)
            sd = scores.std(dim=1, keepdim=True, unbiased=False)
            z = torch.where(sd > 0, (scores - scores.mean(dim=1, keepdim=True)) / sd.clamp_min(1e-300), 0.0)
            total = total + self.weights[m] * z
        return (self.mean + self.scale * total).float()


def shared_scaled_features(ensemble: ForecastEnsemble) -> np.ndarray:
    """The (T, N, F) standardised panel every forecaster reads.

    Explaining the ensemble as one function needs one input; the forecasters of a
    run share the store's features and the training split's normaliser."""
    first = ensemble.forecasters[0].scaled
    for f in ensemble.forecasters[1:]:
        if f.scaled.shape != first.shape or not np.allclose(f.scaled, first):
            raise ValueError(f"{f.name} reads differently standardised features from {ensemble.forecasters[0].name}")
    return first


def explain_ensemble(
    ensemble: ForecastEnsemble,
    t: int,
    horizon: int,
    background_dates: np.ndarray,
    feature_names: tuple[str, ...],
    *,
    nsamples: int = 400,
    seed: int = 0,
) -> Attribution:
    """Grouped SHAP values of every asset's expected ``horizon``-day return at date index ``t``."""
    h = ensemble.panel.horizons.index(horizon)
    scaled = shared_scaled_features(ensemble)
    window = ensemble.min_history
    module = EnsembleReturn(ensemble, t, h).eval()
    x = torch.from_numpy(scaled[t - window + 1 : t + 1][None])  # (1, W, N, F)
    background = torch.from_numpy(np.stack([scaled[d - window + 1 : d + 1] for d in background_dates]))
    with torch.no_grad():
        values = module(x)[0].numpy()
        base = module(background).mean(dim=0).numpy()
    phi = _shap(module, background, x, nsamples, seed)  # (W, N, F, N_out)
    n = x.shape[2]
    contributions = np.zeros((n, len(feature_names) + 1))
    for i in range(n):
        own = phi[:, i, :, i].sum(axis=0)  # (F,)
        contributions[i, :-1] = own
        contributions[i, -1] = phi[..., i].sum() - own.sum()
    symbols = tuple(str(s) for s in ensemble.panel.symbols)
    return Attribution(symbols, values, base, (*feature_names, OTHER_ASSETS), contributions)


def _shap(module: nn.Module, background: torch.Tensor, x: torch.Tensor, nsamples: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    np.random.seed(seed)  # shap's GradientExplainer draws from numpy's global generator
    explainer = shap.GradientExplainer(module, background)
    values = np.asarray(explainer.shap_values(x, nsamples=nsamples))  # (1, *input, outputs)
    return values[0]


class PolicyWeights(nn.Module):
    """(B, obs) -> (B, N): the policy's deterministic action as long-only target weights (cash excluded),
    mapped as ``config.action`` says (the torch twins of rl/env.py's ``long_only_weights`` and
    ``residual_weights``)."""

    def __init__(self, policy, tradable: np.ndarray, config: EnvConfig) -> None:
        super().__init__()
        self.policy = policy
        self.tradable = torch.tensor(tradable, dtype=torch.float32)  # (N+1,)
        self.residual, self.scale = config.action == "residual", config.residual_scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if hasattr(self.policy, "actor"):  # SAC: the squashed mean action
            action = self.policy.actor(obs, deterministic=True)
        else:  # PPO: the Gaussian's mean, clipped to the action box as SB3 does
            action = self.policy.get_distribution(obs).distribution.mean.clamp(-1.0, 1.0)
        if self.residual:  # equal weight tilted; the cash action's share clip(a, 0, 1) scales the risky ones down
            risky = self.tradable[:-1]  # (N,)
            raw = torch.relu(1.0 + self.scale * action[:, :-1]) * risky / risky.sum().clamp_min(1.0)  # (B, N)
            cash = action[:, -1:].clamp(0.0, 1.0)  # (B, 1)
            return (1.0 - cash) * raw / raw.sum(dim=1, keepdim=True).clamp_min(1e-12)  # all zero: all cash
        positive = torch.relu(action) * self.tradable
        return (positive / positive.sum(dim=1, keepdim=True).clamp_min(1e-12))[:, :-1]


def explain_policy(agent, t: int, current: np.ndarray, background_dates: np.ndarray, *, nsamples: int = 400,
                   seed: int = 0) -> Attribution:  # fmt: skip
    """Grouped SHAP values of every asset's target weight chosen by ``agent`` (an AgentAllocator) at ``t``."""
    env = agent.env
    module = PolicyWeights(agent.policy, env._tradable[t], env.config).eval()
    obs = torch.from_numpy(env.observation(t, current)[None])
    # The background starts from cash, so "current holdings" measures what the user's holdings change.
    cash = np.eye(env.n_assets + 1)[-1]
    background = torch.from_numpy(np.stack([env.observation(d, cash) for d in background_dates]))
    with torch.no_grad():
        values = module(obs)[0].numpy()
        base = module(background).mean(dim=0).numpy()
    phi = _shap(module, background, obs, nsamples, seed)  # (obs, N)
    w, n, f = env.window, env.n_assets, len(env.market.feature_names)
    windows = phi[: w * n * f].reshape(w, n, f, n)
    holdings = phi[w * n * f :]  # (N+1, N)
    contributions = np.zeros((n, f + 2))
    for i in range(n):
        own = windows[:, i, :, i].sum(axis=0)
        contributions[i, :f] = own
        contributions[i, f] = windows[..., i].sum() - own.sum()
        contributions[i, f + 1] = holdings[:, i].sum()
    symbols = tuple(str(s) for s in env.market.symbols)
    return Attribution(symbols, values, base, (*env.market.feature_names, OTHER_ASSETS, HOLDINGS), contributions)
