"""Ray Serve: the HTTP app factory, the ingress and model deployments, the recommendation
pipeline, risk filters, auth and the audit log.

settings.py (ServeSettings) -> builder.py (build_app, app_builder) -> ingress.py (Ingress) ->
api.py (create_app) -> service.py -> pipeline.py (RecommendationPipeline) -> market.py, risk.py,
audit.py; deployments.py and explainer.py hold the models; data_watch.py switches every replica
to a newly appended store version. Day two: live_performance.py (the audit log's served forecasts
against what realised) and held_gauges.py (monitor levels kept exported after a command ends).
"""
