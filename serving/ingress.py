"""The Ingress deployment: one ``RecommendationService`` per replica, its HTTP app built by
``create_app`` once the replica is constructed (Serve's late-bound ingress:
``__serve_build_asgi_app__``), so the routes close over this replica's service and keys."""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve

from rayfolio.serving.api import create_app
from rayfolio.serving.auth import load_api_keys
from rayfolio.serving.experiments import experiment_from_user_config
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.service import RecommendationService
from rayfolio.serving.settings import ServeSettings


@serve.ingress()
class Ingress:
    def __init__(self, settings: dict, ensemble, explainer, allocator=None, risk_filter=None) -> None:
        self.settings = s = ServeSettings.model_validate(settings)
        self.keys = load_api_keys()  # from the replica's environment (its runtime_env: builder.py)
        if not self.keys and not s.insecure_dev:
            raise RuntimeError("no API keys configured (RAYFOLIO_API_KEYS or RAYFOLIO_API_KEYS_FILE)")
        self.service = RecommendationService(s, ensemble, explainer, allocator, risk_filter)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.settings, self.service, self.keys)

    async def reconfigure(self, user_config: dict) -> None:
        """Live changes from the Ingress's user_config (`serve deploy`): the experiment, and the house
        limits when the risk filters run here (placement "ingress"). An experiment whose arms cannot be
        loaded is refused (``GET /v1/experiments`` says why) and what served before keeps serving."""
        config = dict(user_config or {})
        if self.settings.placement == "ingress":
            self.service.set_limits(HouseLimits.model_validate({k: v for k, v in config.items() if k != "experiment"}))
        try:
            experiment = experiment_from_user_config(config)
        except ValueError as err:  # not a valid experiment: refused, what serves now keeps serving
            self.service.experiment_refused = str(err)
            return
        # Awaited: a replica that starts with an experiment is ready only once both arms are loaded
        # (Serve keeps the old replicas serving until then), and a running one serves on meanwhile.
        await self.service.set_experiment(experiment)
