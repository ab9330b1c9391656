"""The Explainer: SHAP attributions and a plain-language rationale per asset, in replicas of
their own so that their cost never slows a recommendation. It follows the feature store as it
is appended to (``DataWatch``): the models it explains rebuilt on the new panel, at the versions
it explained before."""

from __future__ import annotations

import threading

import numpy as np

from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.serving.allocator import AgentProposer, load_proposer
from rayfolio.serving.data_watch import DataWatch
from rayfolio.serving.deployments import reload_models
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters, split_indices
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry


class Explainer:
    def __init__(self, settings: dict) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.lock = threading.Lock()
        self.versions: tuple[dict[str, str], dict[str, str]] | None = None  # (forecasters, allocator) explained
        self.watch = DataWatch(s.store, s.data_poll_s, lambda panel: self._load(panel, self.versions), "Explainer")
        self._load(self.watch.panel)

    def _load(self, panel: Panel, versions: tuple[dict[str, str], dict[str, str]] | None = None) -> None:
        """The production models (or ``versions``) on ``panel`` and its SHAP background."""
        s = self.settings
        splitter = PurgedDateSplitter(s.splits, purge=max(panel.horizons))
        registry = ModelRegistry(s.registry)
        forecasters, allocator = versions or (None, None)
        ensemble = ForecastEnsemble(load_forecasters(registry, panel, versions=forecasters), panel)
        if allocator:
            ((name, version),) = allocator.items()
            proposer, allocator = load_proposer(registry, name, panel, s.splits, version=version, ensemble=ensemble)
        else:
            proposer, allocator = load_proposer(registry, s.allocator, panel, s.splits, ensemble=ensemble)
        # An agent's weights are explained through its policy; the tilt's follow the expected
        # return's z-score one for one, so its forecast attributions are its weight's too.
        agent = proposer.agent if isinstance(proposer, AgentProposer) else None
        train = split_indices(panel, splitter, "train")
        train = train[train >= max(ensemble.min_history, agent.env.window if agent else 1) - 1]
        background = train[np.linspace(0, len(train) - 1, s.explain_background).astype(int)]
        versions = ({f.name: f.version for f in ensemble.forecasters}, allocator)
        with self.lock:  # never between an explanation's two SHAP passes
            self.panel, self.ensemble, self.agent, self.background = panel, ensemble, agent, background
            self.versions = versions

    def reload(self) -> dict:
        return reload_models(self.watch, lambda: self._load(self.watch.panel), lambda: {}, self.settings.registry)

    def info(self) -> dict:
        self.watch.poll()
        return {"versions": {}, "data": self.watch.describe()}

    def explain(self, t: int, current: np.ndarray, horizon: int) -> dict:
        from rayfolio.explain.attributions import explain_ensemble, explain_policy
        from rayfolio.explain.rationale import DISCLAIMER, rationale, themes

        self.watch.poll()
        self.watch.ensure(t)  # a date the ingress has and this replica not yet: loaded first
        n = self.settings.explain_samples
        # One explanation at a time per process: SHAP's gradient passes share the models'
        # autograd state, and concurrent ones fail.
        with self.lock:
            panel = self.panel  # the models' own panel, even if a new store version swaps in next
            forecast = explain_ensemble(self.ensemble, t, horizon, self.background, panel.feature_names,
                                        nsamples=n)  # fmt: skip
            policy = explain_policy(self.agent, t, current, self.background, nsamples=n) if self.agent else None
        names = panel.feature_names
        raw = panel.features[t]  # (N, F) the values the rationale quotes
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
        return {"as_of": str(panel.dates[t]), "horizon_days": horizon, "assets": assets, "disclaimer": DISCLAIMER,
                "method": f"SHAP expected gradients, {n} samples, background of {len(self.background)} training "
                          "dates; attributions + base_value = the explained value, up to sampling error"}  # fmt: skip


def top_attributions(groups: tuple[str, ...], contributions: np.ndarray, k: int = 8) -> list[dict]:
    """The ``k`` largest contributions by size, and the rest summed as "all others"."""
    order = np.argsort(-np.abs(contributions))[:k]
    return [{"feature": groups[j], "contribution": float(contributions[j])} for j in order] + [
        {"feature": "all others", "contribution": float(np.delete(contributions, order).sum())}
    ]
