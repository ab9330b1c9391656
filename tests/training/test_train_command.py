"""``rayfolio train`` and ``rayfolio tune`` on a tiny existing feature store: the
best configuration is registered with a typed card, stage auto."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayfolio.cluster.cli import main
from rayfolio.data.store import MANIFEST, sha256_file
from rayfolio.training.cards import ForecasterCard
from rayfolio.training.ensemble import load_forecasters
from rayfolio.training.registry import ModelRegistry
from tests.training.conftest import TINY_SPLITS


def tiny_config(tmp_path: Path) -> Path:
    config = {
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "splits": TINY_SPLITS.model_dump(mode="json", exclude_none=True),
        "registry": str(tmp_path / "registry"),
        "forecasters": {
            "families": ["gat"],  # the command's --family wins
            "train": {"hidden": 4, "window": 10, "epochs": 1, "train_stride": 8},
            "search": {"num_samples": 1, "hidden": [4], "layers": [1], "window": [10]},
            "scaling": {"num_workers": 1},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_registers_one_family(tiny_store, tiny_panel, tmp_path, capsys):
    config, store = str(tiny_config(tmp_path)), str(tiny_store.path)
    assert main(["train", "--family", "lstm", "--config", config, "--store", store]) == 0
    printed = capsys.readouterr().out
    assert "lstm-forecaster" in printed and "production" in printed and "best baseline val Rank IC" in printed
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.models() == ["lstm-forecaster"]
    version = registry.get("lstm-forecaster", stage="production")
    card = version.card
    assert isinstance(card, ForecasterCard) and card.family == "lstm" and card.window == 10
    assert card.horizons == tiny_store.horizons and card.symbols == tuple(tiny_panel.symbols.tolist())
    assert card.calendar.feature_store_sha256 == sha256_file(tiny_store.path / MANIFEST)
    assert card.calendar.splits == TINY_SPLITS and version.metrics["configurations_tried"] == 1
    assert (tmp_path / "runs" / "tiny" / "train" / "forecasts.parquet").is_file()
    assert [f.version for f in load_forecasters(registry, tiny_panel)] == ["v0001"]


@pytest.mark.slow
def test_tune_overrides_the_search_size(tiny_store, tmp_path, capsys):
    config, store = str(tiny_config(tmp_path)), str(tiny_store.path)
    assert main(["tune", "--family", "lstm", "--samples", "2", "--config", config, "--store", store]) == 0
    assert "lstm-forecaster" in capsys.readouterr().out
    registry = ModelRegistry(tmp_path / "registry")
    tuned = registry.get("lstm-forecaster", stage="production")
    assert tuned.metrics["configurations_tried"] == 2 and registry.models() == ["lstm-forecaster"]
    assert (tmp_path / "runs" / "tiny" / "tune" / "forecasts.parquet").is_file()


def test_unknown_family_and_missing_store_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--family", "arima"])
    assert exit_.value.code == 2 and "invalid choice: 'arima'" in capsys.readouterr().err
    missing = tmp_path / "no-store"
    assert main(["train", "--family", "lstm", "--config", str(tiny_config(tmp_path)), "--store", str(missing)]) == 2
    assert capsys.readouterr().err == f"rayfolio: error: {missing}: not a feature store (no manifest.json)\n"
    with pytest.raises(SystemExit) as exit_:
        main(["tune", "--samples", "0"])
    assert exit_.value.code == 2 and "--samples: must be at least 1" in capsys.readouterr().err
