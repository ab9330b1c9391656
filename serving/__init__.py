"""Ray Serve: the HTTP app factory, the ingress and model deployments, the recommendation
pipeline, risk filters, auth and the audit log.

settings.py (ServeSettings) -> builder.py (build_app, app_builder) -> ingress.py (Ingress) ->
api.py (create_app) -> service.py -> pipeline.py (RecommendationPipeline) -> market.py, risk.py,
audit.py; deployments.py and explainer.py hold the models.
"""
