"""/readyz says which served file no longer verifies (a tampered weight or ONNX graph)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.tiny_market import tiny_settings
from rayfolio.serving.api import registry_problem
from rayfolio.training.registry import ModelRegistry


def test_readiness_names_the_file_that_fails_its_checksum(tmp_path, ray_session):  # the store: Ray Data
    settings = tiny_settings(tmp_path, allocator="ppo-allocator")
    service = SimpleNamespace(registry=ModelRegistry(settings.registry), settings=settings)
    assert registry_problem(service) is None
    weights = settings.registry / "lstm-forecaster" / "v0001" / "weights.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    problem = registry_problem(service)
    assert problem.startswith("models failed to load: <registry>/lstm-forecaster/v0001/weights.pt: sha256 does not")
    assert str(settings.registry) not in problem  # no server path in an answer to anyone
