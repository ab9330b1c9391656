"""Registry round trip, corrupted files refused, promote and rollback; the catalog."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from rayfolio.data.store import sha256_file
from rayfolio.training.catalog import CATALOG
from rayfolio.training.models import MODEL_FAMILIES, build_model
from rayfolio.training.registry import WEIGHTS, ModelRegistry, RegistryError
from tests.training.card_examples import forecaster_card


def register(registry: ModelRegistry, seed: int, stage="auto"):
    torch.manual_seed(seed)
    card = forecaster_card()
    model = build_model("lstm", card.model_kwargs())
    return model, registry.register(card, {WEIGHTS: model.state_dict()}, metrics={"val_rank_ic": 0.01 * seed},
                                    stage=stage)  # fmt: skip


def test_round_trip_restores_identical_predictions(tmp_path):
    registry = ModelRegistry(tmp_path)
    model, version = register(registry, 1)
    assert version.version == "v0001" and version.manifest["feature_manifest_sha256"] == "ab" * 32
    assert version.manifest["data_range"] == ["2000-01-03", "2002-09-30"]
    loaded = build_model("lstm", version.card.model_kwargs())
    loaded.load_state_dict(registry.load_weights(registry.get("lstm-forecaster", "v0001")))
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_corrupted_or_missing_file_is_refused_by_name(tmp_path):
    registry = ModelRegistry(tmp_path)
    _, version = register(registry, 1)
    weights = version.path / "weights.pt"
    expected = version.manifest["files"]["weights.pt"]
    weights.write_bytes(weights.read_bytes()[:-4] + b"evil")
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(
        RegistryError, match=rf"weights\.pt: sha256 does not match .*expected {expected}, actual {actual}"
    ):
        registry.get("lstm-forecaster", "v0001")
    (version.path / "metrics.json").unlink()
    with pytest.raises(RegistryError, match=r"metrics\.json: listed in manifest\.json but missing"):
        registry.get("lstm-forecaster", "v0001")


def test_weights_only_refuses_pickled_code(tmp_path):
    registry = ModelRegistry(tmp_path)
    _, version = register(registry, 1)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"w": Payload()}, version.path / "weights.pt")
    manifest = json.loads((version.path / "manifest.json").read_text())
    manifest["files"]["weights.pt"] = sha256_file(version.path / "weights.pt")  # an attacker who fixes the checksum too
    (version.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="Weights only load failed"):
        registry.load_weights(registry.get("lstm-forecaster", "v0001"))


def test_promote_and_rollback_move_the_stage_pointer(tmp_path):
    registry = ModelRegistry(tmp_path)
    for seed in (1, 2, 3):
        register(registry, seed, stage=None)
    assert registry.versions("lstm-forecaster") == ["v0001", "v0002", "v0003"]
    with pytest.raises(RegistryError, match="no production version"):
        registry.get("lstm-forecaster")
    registry.promote("lstm-forecaster", "v0001")
    registry.promote("lstm-forecaster", "v0003")
    assert registry.get("lstm-forecaster").version == "v0003"
    assert registry.rollback("lstm-forecaster") == "v0001"
    assert registry.stage_version("lstm-forecaster") == "v0001"
    with pytest.raises(RegistryError, match="no earlier production version"):
        registry.rollback("lstm-forecaster")
    with pytest.raises(RegistryError, match="has no version 'v0009'"):
        registry.promote("lstm-forecaster", "v0009")
    assert registry.stage_version("lstm-forecaster") == "v0001"  # a refused promote moves nothing
    with pytest.raises(RegistryError, match="model name"):
        registry.promote("../escape", "v0001")


def test_catalog_lists_exactly_the_families_in_code():
    assert set(CATALOG) == set(MODEL_FAMILIES)
    for spec in CATALOG.values():
        defaults = spec.default_hyperparameters()
        assert {"hidden", "lr", "window"} <= set(defaults) and spec.references


def _register_until_killed(root: str, ready) -> None:
    registry = ModelRegistry(root)
    state = {"w": torch.randn(512, 1024)}  # 2 MiB: each save takes a moment to be caught in
    while True:
        registry.register(forecaster_card(), {WEIGHTS: state}, metrics={"m": 1})
        ready.set()


def test_a_kill_while_saving_leaves_no_partial_version(tmp_path):
    """SIGKILL a process that registers versions back to back, at random moments: every version
    the registry lists is complete (checksums verify, weights load); half-written ones are not listed."""
    import multiprocessing
    import os
    import random
    import signal
    import time

    context, rng = multiprocessing.get_context("spawn"), random.Random(0)
    for _ in range(3):
        ready = context.Event()
        writer = context.Process(target=_register_until_killed, args=(str(tmp_path), ready))
        writer.start()
        assert ready.wait(timeout=120), "the writer never registered a version"
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        registry = ModelRegistry(tmp_path)
        for version in registry.versions("lstm-forecaster"):
            assert registry.load_weights(registry.get("lstm-forecaster", version))["w"].shape == (512, 1024)
        registry.get("lstm-forecaster", stage="production")  # the stage pointer is never half-written either
    complete = ModelRegistry(tmp_path).versions("lstm-forecaster")
    leftovers = list((tmp_path / "lstm-forecaster").glob(".staging-*"))
    print(f"\n{len(complete)} complete versions; {len(leftovers)} half-written, unlisted")
    assert len(complete) >= 3
