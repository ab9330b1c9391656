"""The Serve application: each deployment with its own scaling, composed with ``.bind()``.

``build_app(settings)`` for ``rayfolio serve`` and tests; ``app_builder(args)`` for ``serve run``
/ ``serve deploy`` (``import_path: rayfolio.serving.builder:app_builder``), whose ``args`` are
``ServeSettings`` fields with ``run_config`` (a path) for the split dates.
"""

from __future__ import annotations

from ray import serve
from ray.serve.config import BackpressureConfig

from rayfolio.serving.deployments import Allocator, Ensemble, RiskFilter
from rayfolio.serving.explainer import Explainer
from rayfolio.serving.ingress import Ingress
from rayfolio.serving.settings import ServeSettings, secrets_from, settings_from_args


def build_app(settings: ServeSettings, environ: dict[str, str] | None = None) -> serve.Application:
    """``environ`` (default: this process's) supplies the keys' variables to the ingress."""
    # The experiment travels only in the Ingress's user_config: changing it reconfigures replicas live.
    plain = settings.model_dump(mode="json", exclude={"experiment"})
    limits = settings.house_limits.model_dump(mode="json")
    # The Ingress's user_config: the experiment (both placements) and, placement "ingress", the house limits.
    experiment = {} if settings.experiment is None else {"experiment": settings.experiment}
    ensemble = serve.deployment(Ensemble, name="Ensemble").options(**settings.ensemble.options(32)).bind(plain)
    # Stored explanations are looked up while a miss is computed (one at a time: Explainer's locks).
    explainer = serve.deployment(Explainer, name="Explainer").options(**settings.explainer.options(16)).bind(plain)
    # The app admits max_in_flight requests per replica and sheds the rest with a JSON 503; Serve's
    # own limits sit a little above that as a cheap last-resort backstop (its proxy's 503 is plain
    # text): see ServeSettings.serve_headroom.
    ingress = serve.deployment(Ingress, name="Ingress").options(
        **settings.ingress.options(settings.serve_max_ongoing, runtime_env={"env_vars": secrets_from(environ)}),
        max_queued_requests=settings.serve_max_queued,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s),
    )
    if settings.placement == "ingress":
        return ingress.options(user_config={**limits, **experiment}).bind(plain, ensemble, explainer)
    allocator = serve.deployment(Allocator, name="Allocator").options(**settings.allocator_scaling.options(32))
    risk = serve.deployment(RiskFilter, name="RiskFilter").options(**settings.risk_filter.options(32),
                                                                   user_config=limits)  # fmt: skip
    return ingress.options(user_config=experiment).bind(plain, ensemble, explainer, allocator.bind(plain),
                                                        risk.bind(plain))  # fmt: skip


def app_builder(args: dict) -> serve.Application:
    return build_app(settings_from_args(args))
