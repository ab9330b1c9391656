"""The service's own Prometheus metrics (``ray.util.metrics``), exported by every
Ray node beside Ray's and Serve's (``ray_`` is prefixed to each name); the
Grafana dashboard in cluster/grafana/ plots them.

Created in the replica that records them: one ``ServiceMetrics`` per replica.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ray.util import metrics

# Names as Prometheus shows them (with Ray's prefix): the dashboard test checks its queries against these.
EXPORTED = (
    "ray_rayfolio_recommendations_total",
    "ray_rayfolio_recommendation_latency_ms",
    "ray_rayfolio_risk_checks_triggered_total",
    "ray_rayfolio_forecast_cache_total",
    "ray_rayfolio_model_version_info",
    "ray_rayfolio_explanations_total",
    "ray_rayfolio_experiment_requests_total",
    "ray_rayfolio_experiment_latency_ms",
)


class ServiceMetrics:
    def __init__(self) -> None:
        self.recommendations = metrics.Counter(
            "rayfolio_recommendations_total", "recommendations answered (audited)", tag_keys=("allocator",)
        )
        self.latency = metrics.Histogram(
            "rayfolio_recommendation_latency_ms",
            "time in the ingress per recommendation, validation to audit commit",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
        )
        self.checks = metrics.Counter(
            "rayfolio_risk_checks_triggered_total", "risk checks that changed a recommendation", tag_keys=("check",)
        )
        self.cache = metrics.Counter(
            "rayfolio_forecast_cache_total", "per-date forecast lookups by outcome", tag_keys=("result", "where")
        )
        self.model_version = metrics.Gauge(
            "rayfolio_model_version_info", "1 for each model version this replica serves", tag_keys=("model", "version")
        )
        self.explanations = metrics.Counter("rayfolio_explanations_total", "explanations computed")
        # Both arms of an experiment decide every request (one is served): per arm, decisions by outcome
        # and the time each arm's batch took.
        self.arm_requests = metrics.Counter(
            "rayfolio_experiment_requests_total", "requests each experiment arm decided, by outcome",
            tag_keys=("experiment", "arm", "outcome"),
        )  # fmt: skip
        self.arm_latency = metrics.Histogram(
            "rayfolio_experiment_latency_ms", "time each experiment arm took per batch of recommendations",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], tag_keys=("experiment", "arm"),
        )  # fmt: skip

    def served(self, allocator: str, responses: Iterable) -> None:
        """A batch's answered recommendations: one increment per counter and tag (each ``inc`` is a
        call into Ray's metrics agent; per request they cost ~5% of a loaded ingress)."""
        responses = list(responses)
        if responses:
            self.recommendations.inc(len(responses), tags={"allocator": allocator})
        changed = Counter(check.name for r in responses for check in r.checks if check.changed)
        for name, count in changed.items():
            self.checks.inc(count, tags={"check": name})

    def latency_ms(self, latency_ms: float) -> None:
        self.latency.observe(latency_ms)

    def arm(self, experiment: str, arm: str, latency_ms: float, ok: bool, requests: int) -> None:
        tags = {"experiment": experiment, "arm": arm}
        self.arm_requests.inc(requests, tags={**tags, "outcome": "ok" if ok else "error"})
        self.arm_latency.observe(latency_ms, tags=tags)

    def cache_lookups(self, hits: int, misses: int, where: str) -> None:
        if hits:
            self.cache.inc(hits, tags={"result": "hit", "where": where})
        if misses:
            self.cache.inc(misses, tags={"result": "miss", "where": where})

    def versions(self, versions: dict[str, str]) -> None:
        for model, version in versions.items():
            self.model_version.set(1, tags={"model": model, "version": version})
