"""The Explainer: attributions and a plain-language rationale per asset, in replicas of their own so
that their cost never slows a recommendation. It follows the feature store as it is appended to
(``DataWatch``): the models it explains rebuilt on the new panel, at the versions it explained before.

The forecast part depends only on the date and the production forecasters: it is read from the
explanation store (explain/store.py, filled by ``rayfolio explanations refresh``, the daily job and
the main job), and on a miss computed with the same function and seed (the same numbers), stored and
answered. Only the policy's part (an agent allocator) depends on the request: it is computed per
request for the assets the recommendation holds or trades, over a background sized for latency
(``policy_background``, ``policy_samples``). A lookup never waits for a computation: the locks are
around computations only, and a computation runs in a thread while the replica's event loop serves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from rayfolio.explain.attributions import Attribution
from rayfolio.explain.expected_gradients import (
    Method,
    explain_date,
    explain_policy_assets,
    iso,
    method_for,
    training_background,
)
from rayfolio.explain.store import ExplanationStore, default_root
from rayfolio.serving.allocator import AgentProposer, load_proposer
from rayfolio.serving.data_watch import DataWatch
from rayfolio.serving.deployments import reload_models
from rayfolio.serving.settings import ServeSettings
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters
from rayfolio.training.panel import Panel
from rayfolio.training.registry import ModelRegistry

logger = logging.getLogger(__name__)

TRADED = 1e-6  # a target weight this close to the current one is no trade


@dataclass(frozen=True)
class Explained:
    """What one replica explains with, swapped whole on a reload or a new store version: a request
    reads it once, so it never mixes two."""

    panel: Panel
    ensemble: ForecastEnsemble
    agent: object | None  # an AgentAllocator; None for the tilt (its weights follow the forecast's z)
    background: np.ndarray  # training date indices: the forecast explanations' references
    method: Method
    policy_background: np.ndarray | None
    policy_method: Method | None
    store: ExplanationStore | None  # None: explain_precomputed is off
    versions: tuple[dict[str, str], dict[str, str]]  # (forecasters, allocator)


class Explainer:
    def __init__(self, settings: dict) -> None:
        self.settings = ServeSettings.model_validate(settings)
        self.computing = asyncio.Lock()  # one forecast explanation computed at a time (a miss)
        self.policy_computing = asyncio.Lock()  # one policy part at a time: each is ~10-50 ms of CPU
        self.versions: tuple[dict[str, str], dict[str, str]] | None = None  # (forecasters, allocator) explained
        self.watch = DataWatch(self.settings.store, self.settings.data_poll_s,
                               lambda panel: self._load(panel, self.versions), "Explainer")  # fmt: skip
        self._load(self.watch.panel)

    def _load(self, panel: Panel, versions: tuple[dict[str, str], dict[str, str]] | None = None) -> None:
        """The production models (or ``versions``) on ``panel``, their backgrounds and store."""
        s = self.settings
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
        background = training_background(panel, s.splits, ensemble.min_history, s.explain_background)
        method = method_for(panel, background, s.explain_samples)
        policy_background = policy_method = None
        if agent is not None:
            policy_background = training_background(panel, s.splits, agent.env.window, s.policy_background)
            policy_method = method_for(panel, policy_background, s.policy_samples)
            # A policy's first decision and first backward pass cost ~0.35 s: paid here, not by a request.
            cash, last = np.eye(agent.env.n_assets + 1)[-1], len(panel.dates) - 1
            agent.decide(last, cash)
            explain_policy_assets(agent, last, cash, policy_background, [0], policy_method)
        forecaster_versions = {f.name: f.version for f in ensemble.forecasters}
        store = None
        if s.explain_precomputed:
            store = ExplanationStore(s.explanations or default_root(s.store), forecaster_versions, method.key())
        self.loaded = Explained(panel, ensemble, agent, background, method, policy_background, policy_method, store,
                                (forecaster_versions, allocator))  # fmt: skip
        self.versions = self.loaded.versions

    @property
    def ensemble(self) -> ForecastEnsemble:
        return self.loaded.ensemble

    def reload(self) -> dict:
        return reload_models(self.watch, lambda: self._load(self.watch.panel), lambda: {}, self.settings.registry)

    def info(self) -> dict:
        self.watch.poll()
        return {"versions": {}, "data": self.watch.describe()}

    async def forecast_explanation(self, m: Explained, t: int) -> tuple[dict[int, Attribution], str]:
        """Every horizon's forecast explanation at ``t`` and how it was had: "precomputed" (the store),
        "computed and stored" (a miss) or "computed" (no store)."""
        date = iso(m.panel.dates[t])
        if m.store is not None:
            found = await asyncio.to_thread(m.store.get, date)
            if found is not None:
                return found, "precomputed"
        async with self.computing:
            if m.store is not None:  # asked for by a request this one waited behind?
                found = await asyncio.to_thread(m.store.get, date)
                if found is not None:
                    return found, "precomputed"
            explained = await asyncio.to_thread(explain_date, m.ensemble, t, m.background, m.panel.feature_names,
                                                m.method)  # fmt: skip
        if m.store is None:
            return explained, "computed"
        try:
            await asyncio.to_thread(m.store.put, date, explained)
        except OSError as err:  # a read-only or full disk: the answer stands, the next request computes again
            logger.warning("explanations for %s not stored in %s: %s", date, m.store.path, err)
            return explained, "computed"
        return explained, "computed and stored"

    async def explain(self, t: int, current: np.ndarray, horizon: int, target: np.ndarray | None = None) -> dict:
        """Explain date index ``t`` for a portfolio holding ``current`` (N+1 weights, cash last).
        ``target``: the recommendation's target weights (N+1), for which assets it trades; None: the
        policy's own weights (its proposal before the risk checks)."""
        from rayfolio.explain.rationale import DISCLAIMER, rationale, themes

        await self.watch.until(t)  # a date the ingress has and this replica not yet: loaded first
        m = self.loaded  # one set of models for the whole request, even if a new one swaps in meanwhile
        explained, how = await self.forecast_explanation(m, t)
        forecast = explained[horizon]
        policy, assets = None, []
        if m.agent is not None:
            async with self.policy_computing:
                policy, assets = await asyncio.to_thread(self._policy, m, t, current, target)
        names = m.panel.feature_names
        raw = m.panel.features[t]  # (N, F) the values the rationale quotes
        by_asset = {i: a for a, i in enumerate(assets)}
        out = {}
        for i, symbol in enumerate(forecast.symbols):
            values = {f: float(raw[i, k]) for k, f in enumerate(names)}
            by_return = themes(forecast.groups, forecast.contributions[i])
            out[symbol] = {
                "expected_return": float(forecast.values[i]),
                "base_value": float(forecast.base_values[i]),
                "attributions": top_attributions(forecast.groups, forecast.contributions[i]),
                "rationale": rationale(symbol, f"expected {horizon}-day return", forecast.values[i], by_return,
                                       values),
            }  # fmt: skip
            if policy is not None and i in by_asset:
                a = by_asset[i]
                by_weight = themes(policy.groups, policy.contributions[a])
                out[symbol] |= {
                    "policy_weight": float(policy.values[a]),
                    "policy_base_value": float(policy.base_values[a]),
                    "policy_attributions": top_attributions(policy.groups, policy.contributions[a]),
                    "policy_rationale": rationale(symbol, "weight before risk checks", policy.values[a], by_weight,
                                                  values),
                }  # fmt: skip
        date = iso(m.panel.dates[t])
        method = (f"SHAP values by expected gradients, {m.method.samples} samples over a background of "
                  f"{len(m.background)} training dates, {how} for {date}")  # fmt: skip
        if m.policy_method is not None:
            method += (f"; policy weights of the {len(assets)} assets held or traded: "
                       f"{m.policy_method.samples} samples over {len(m.policy_background)} training dates, "
                       "computed for this request")  # fmt: skip
        method += "; attributions + base_value = the explained value, up to sampling error"
        return {"as_of": date, "horizon_days": horizon, "assets": out, "disclaimer": DISCLAIMER, "method": method}

    @staticmethod
    def _policy(m: Explained, t: int, current: np.ndarray, target: np.ndarray | None) -> tuple[Attribution, list[int]]:
        current = np.asarray(current, dtype=np.float64)
        target = m.agent.decide(t, current) if target is None else np.asarray(target, dtype=np.float64)
        risky = slice(0, len(current) - 1)
        assets = np.flatnonzero((current[risky] > 0) | (np.abs(target[risky] - current[risky]) > TRADED)).tolist()
        if not assets:  # all cash, staying in cash: nothing held or traded to explain
            return None, []
        return explain_policy_assets(m.agent, t, current, m.policy_background, assets, m.policy_method), assets


def top_attributions(groups: tuple[str, ...], contributions: np.ndarray, k: int = 8) -> list[dict]:
    """The ``k`` largest contributions by size, and the rest summed as "all others"."""
    order = np.argsort(-np.abs(contributions))[:k]
    return [{"feature": groups[j], "contribution": float(contributions[j])} for j in order] + [
        {"feature": "all others", "contribution": float(np.delete(contributions, order).sum())}
    ]
