"""The Explainer: SHAP attributions and a plain-language rationale per asset, in replicas of
their own so that their cost never slows a recommendation."""

from __future__ import annotations

import threading

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.serving.allocator import AgentProposer, load_proposer
from rayfolio.serving.deployments import load_panel, try_reload
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters, split_indices
from rayfolio.training.registry import ModelRegistry


class Explainer:
    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.panel = load_panel(self.settings)
        self.lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        s, panel = self.settings, self.panel
        splitter = PurgedDateSplitter(s.splits, purge=max(panel.horizons))
        registry = ModelRegistry(s.registry)
        ensemble = ForecastEnsemble(load_forecasters(registry, panel), panel)
        proposer, _ = load_proposer(registry, s.allocator, panel, s.splits, ensemble=ensemble)
        # An agent's weights are explained through its policy; the tilt's follow the expected
        # return's z-score one for one, so its forecast attributions are its weight's too.
        agent = proposer.agent if isinstance(proposer, AgentProposer) else None
        train = split_indices(panel, splitter, "train")
        train = train[train >= max(ensemble.min_history, agent.env.window if agent else 1) - 1]
        background = train[np.linspace(0, len(train) - 1, s.explain_background).astype(int)]
        with self.lock:  # never between an explanation's two SHAP passes
            self.ensemble, self.agent, self.background = ensemble, agent, background

    def reload(self) -> dict:
        return try_reload(self._load, lambda: {}, self.settings.registry)

    def info(self) -> dict:
        return {"versions": {}}

    def explain(self, t: int, current: np.ndarray, horizon: int) -> dict:
        from rayfolio.explain.attributions import explain_ensemble, explain_policy
        from rayfolio.explain.rationale import DISCLAIMER, rationale, themes

        n = self.settings.explain_samples
        # One explanation at a time per process: SHAP's gradient passes share the models'
        # autograd state, and concurrent ones fail.
        with self.lock:
            forecast = explain_ensemble(self.ensemble, t, horizon, self.background, self.panel.feature_names,
                                        nsamples=n)  # fmt: skip
            policy = explain_policy(self.agent, t, current, self.background, nsamples=n) if self.agent else None
        names = self.panel.feature_names
        raw = self.panel.features[t]  # (N, F) the values the rationale quotes
        assets = {}
        for i, symbol in enumerate(forecast.symbols):
            values = {f: float(raw[i, k]) for k, f in enumerate(names)}
            by_return = themes(forecast.groups, forecast.contributions[i])
            assets[symbol] = {
                "expected_return": float(forecast.values[i]),
                "base_value": float(forecast.base_values[i]),
                "attributions": top_attributions(forecast.groups, forecast.contributions[i]),
                "rationale": rationale(symbol, f"expected {horizon}-day return", forecast.values[i], by_return,
                                       values),
            }  # fmt: skip
            if policy is not None:
                by_weight = themes(policy.groups, policy.contributions[i])
                assets[symbol] |= {
                    "policy_weight": float(policy.values[i]),
                    "policy_base_value": float(policy.base_values[i]),
                    "policy_attributions": top_attributions(policy.groups, policy.contributions[i]),
                    "policy_rationale": rationale(symbol, "weight before risk checks", policy.values[i], by_weight,
                                                  values),
                }  # fmt: skip
        return {"as_of": str(self.panel.dates[t]), "horizon_days": horizon, "assets": assets, "disclaimer": DISCLAIMER,
                "method": f"SHAP expected gradients, {n} samples, background of {len(self.background)} training "
                          "dates; attributions + base_value = the explained value, up to sampling error"}  # fmt: skip


def top_attributions(groups: tuple[str, ...], contributions: np.ndarray, k: int = 8) -> list[dict]:
    """The ``k`` largest contributions by size, and the rest summed as "all others"."""
    order = np.argsort(-np.abs(contributions))[:k]
    return [{"feature": groups[j], "contribution": float(contributions[j])} for j in order] + [
        {"feature": "all others", "contribution": float(np.delete(contributions, order).sum())}
    ]
