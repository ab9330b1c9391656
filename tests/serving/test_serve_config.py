"""cluster/serve_config.yaml passes Serve's own schema and ours; its split dates are the run
config's (never repeated); `rayfolio serve` reads the same settings from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from rayfolio.cluster.config import load_config
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.settings import SettingsError, read_serve_config, settings_from_args

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "cluster" / "serve_config.yaml"


def test_serve_config_passes_serves_schema_and_ours():
    raw = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"
    app = raw["applications"][0]
    assert app["import_path"] == "rayfolio.serving.builder:app_builder"
    assert "splits" not in app["args"]  # written once, in the run config
    settings = settings_from_args(app["args"], base=REPO)  # what app_builder validates
    assert settings.splits == load_config(REPO / app["args"]["run_config"]).splits
    # House limits go to the deployment that runs the risk filters.
    filters = "Ingress" if settings.placement == "ingress" else "RiskFilter"
    (risk,) = [d for d in app["deployments"] if "user_config" in d]
    assert risk["name"] == filters and HouseLimits.model_validate(risk["user_config"]) == HouseLimits()
    assert settings.capacity == settings.ingress.max_replicas * settings.max_in_flight >= 64
    assert settings.serve_max_ongoing > settings.max_in_flight  # Serve's limit is the backstop, not the shedder


def test_rayfolio_serve_reads_the_same_file_and_flags_override_it():
    config = read_serve_config(CONFIG)
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    settings = settings_from_args(config.settings, base=REPO, allocator="ppo-allocator", store=Path("/elsewhere"))
    assert settings.allocator == "ppo-allocator" and settings.store == Path("/elsewhere")
    assert settings.house_limits == HouseLimits() and settings.rate_per_key == 50.0


@pytest.mark.parametrize(
    ("run_config", "message"),
    [("missing.yaml", "cannot read run config"), ("no_splits.yaml", "a run config with a 'splits' section"),
     ("bad_splits.yaml", "splits: train_end")],
)  # fmt: skip
def test_a_run_config_without_usable_splits_is_named(tmp_path, run_config, message):
    (tmp_path / "no_splits.yaml").write_text("name: x\n")
    (tmp_path / "bad_splits.yaml").write_text("splits: {train_end: soon}\n")
    args = read_serve_config(CONFIG).settings | {"run_config": run_config}
    with pytest.raises(SettingsError, match=message):
        settings_from_args(args, base=tmp_path)
