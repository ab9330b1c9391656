"""cluster/serve_config.yaml passes Serve's own schema and builds the app."""

from __future__ import annotations

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from rayfolio.serving.app import ServeSettings
from rayfolio.serving.risk import HouseLimits

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "serve_config.yaml"


def test_serve_config_passes_serves_schema_and_ours():
    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"
    app = raw["applications"][0]
    assert app["import_path"] == "rayfolio.serving.app:app_builder"
    settings = ServeSettings.model_validate(app["args"])  # what app_builder validates
    # House limits go to the deployment that runs the risk filters.
    filters = "Ingress" if settings.placement == "ingress" else "RiskFilter"
    (risk,) = [d for d in app["deployments"] if "user_config" in d]
    assert risk["name"] == filters and HouseLimits.model_validate(risk["user_config"]) == HouseLimits()
