"""Typed registry cards: round trips, refusal of a card that does not validate
(named by file and field, like a bad checksum), stage auto, production(kind)."""

from __future__ import annotations

import json

import pytest
import torch

from rayfolio.data.store import sha256_file
from rayfolio.training.cards import CARD, AllocatorCard, ForecasterCard
from rayfolio.training.registry import CARD_FILE, MANIFEST, WEIGHTS, ModelRegistry, RegistryError
from tests.training.card_examples import allocator_card, forecaster_card

STATE = {"w": torch.arange(6.0).reshape(2, 3)}


@pytest.mark.parametrize("card", [forecaster_card(), allocator_card()], ids=["forecaster", "allocator"])
def test_cards_round_trip(card, tmp_path):
    assert CARD.validate_python(card.model_dump()) == card
    assert CARD.validate_json(card.model_dump_json(), strict=True) == card
    registry = ModelRegistry(tmp_path)
    version = registry.register(card, {WEIGHTS: STATE}, metrics={"score": 1.5})
    again = registry.get(card.name, version.version)
    assert again.card == card and type(again.card) is type(card) and again.metrics == {"score": 1.5}
    assert set(again.manifest["files"]) == {WEIGHTS, CARD_FILE, "metrics.json"} and again.manifest["kind"] == card.kind
    torch.testing.assert_close(registry.load_weights(again), STATE)


def test_derived_settings_come_from_the_training_config():
    card = forecaster_card(graph_k=3, graph_lookback=20, graph_sector_k=1)
    assert card.name == "lstm-forecaster" and card.family == "lstm" and card.window == 5
    assert (card.graph.k, card.graph.lookback, card.graph.sector_k) == (3, 20, 1)
    assert card.model_kwargs() == {"n_features": 4, "n_horizons": 2, "hidden": 8, "layers": 1, "dropout": 0.1}
    assert allocator_card().name == "ppo-allocator"
    assert allocator_card().policy_kwargs.as_sb3() == {
        "net_arch": [16],
        "features_extractor_kwargs": {"window": 10, "n_assets": 3, "n_features": 4, "embedding": 4},
    }


def _rewrite_card(version, edit) -> None:
    """Edit a stored card and fix its checksum too (a bug or an attacker that updates the manifest)."""
    path = version.path / CARD_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    manifest = json.loads((version.path / MANIFEST).read_text())
    manifest["files"][CARD_FILE] = sha256_file(path)
    (version.path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("horizons"), r"field 'horizons': Field required"),
        (lambda c: c["train"].update(hidden="8"), r"field 'train\.hidden': Input should be a valid integer"),
        (lambda c: c["calendar"].update(start="yesterday"), r"field 'calendar\.start': Input should be a valid date"),
        (lambda c: c.update(symbols="AAA"), r"field 'symbols': Input should be a valid array"),
        (lambda c: c.update(owner="me"), r"field 'owner': Extra inputs are not permitted"),
        (lambda c: c["normalizer"].update(mean=[0.0]), r"normalizer.*one value per feature"),
        (lambda c: c.pop("kind"), r"field 'kind': Unable to extract tag"),
    ],
    ids=["missing", "wrong-type", "wrong-date", "not-a-list", "extra", "inconsistent", "no-kind"],
)
def test_a_card_that_does_not_validate_is_refused_by_file_and_field(edit, message, tmp_path):
    registry = ModelRegistry(tmp_path)
    version = registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={})
    _rewrite_card(version, edit)
    with pytest.raises(RegistryError, match=rf"{CARD_FILE}: not a valid card \(.*{message}"):
        registry.get("lstm-forecaster", version.version)
    with pytest.raises(RegistryError, match="not a valid card"):
        registry.production("forecaster")


def test_a_card_of_another_model_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={})
    _rewrite_card(version, lambda c: c["train"].update(family="gat"))
    with pytest.raises(RegistryError, match="a card of 'gat-forecaster' in 'lstm-forecaster'"):
        registry.get("lstm-forecaster", version.version)


def test_stage_auto_is_production_first_then_staging(tmp_path):
    registry = ModelRegistry(tmp_path)
    versions = [registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={}) for _ in range(3)]
    assert [registry.stage_of(v) for v in versions] == ["production", None, "staging"]  # v0003 replaced v0002
    assert registry.stage_version("lstm-forecaster", "production") == "v0001"
    assert registry.stage_version("lstm-forecaster", "staging") == "v0003"
    assert registry.stage_of(registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={}, stage=None)) is None
    registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={}, stage="production")
    assert registry.stage_version("lstm-forecaster", "production") == "v0005"
    with pytest.raises(RegistryError, match="unknown stage 'prod'"):
        registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={}, stage="prod")
    with pytest.raises(RegistryError, match="file name"):
        registry.register(forecaster_card(), {"../weights.pt": STATE}, metrics={})
    assert registry.versions("lstm-forecaster") == ["v0001", "v0002", "v0003", "v0004", "v0005"]  # refused: unwritten


def test_production_lists_the_production_versions_of_one_kind(tmp_path):
    registry = ModelRegistry(tmp_path)
    assert registry.production("forecaster") == [] and registry.production("allocator") == []
    registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={})
    registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={})  # staging: not listed
    registry.register(forecaster_card().model_copy(update={"train": forecaster_card().train.model_copy(
        update={"family": "gat"})}), {WEIGHTS: STATE}, metrics={}, stage="staging")  # fmt: skip
    registry.register(allocator_card(), {WEIGHTS: STATE}, metrics={})
    forecasters = registry.production("forecaster")
    assert [(v.name, v.version) for v in forecasters] == [("lstm-forecaster", "v0001")]
    assert all(isinstance(v.card, ForecasterCard) for v in forecasters)
    allocators = registry.production("allocator")
    assert [(v.name, v.version) for v in allocators] == [("ppo-allocator", "v0001")]
    assert isinstance(allocators[0].card, AllocatorCard)
    # A broken model of another kind does not stop this kind from loading; a broken one of this kind does.
    (allocators[0].path / WEIGHTS).write_bytes(b"tampered")
    assert [v.name for v in registry.production("forecaster")] == ["lstm-forecaster"]
    with pytest.raises(RegistryError, match="sha256 does not match"):
        registry.production("allocator")


def test_a_version_from_before_cards_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = registry.register(forecaster_card(), {WEIGHTS: STATE}, metrics={})
    manifest = json.loads((version.path / MANIFEST).read_text())
    del manifest["files"][CARD_FILE]
    (version.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match=r"lists no card\.json"):
        registry.get("lstm-forecaster")
