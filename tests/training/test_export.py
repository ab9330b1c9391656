"""ONNX export (``rayfolio models export``): the gate's figures, a model int8 destroys refused with
nothing registered, the ONNX runtimes giving torch's forecasts, a tampered graph refused at load,
the GAT refused in one line, and the Ensemble deployment serving an exported version.

Tiny untrained nets on the 8-asset training store: an LSTM with two seeds, a Transformer, a GAT."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from rayfolio.cluster.cli import main
from rayfolio.data.splits import PurgedDateSplitter
from rayfolio.serving.audit import sqlite_url
from rayfolio.serving.deployments import Ensemble
from rayfolio.serving.settings import ServeSettings, settings_from_args
from rayfolio.training.cards import Calendar, ForecasterCard, NormalizerParams
from rayfolio.training.catalog import CATALOG
from rayfolio.training.config import TrainConfig
from rayfolio.training.ensemble import ForecastEnsemble, load_forecasters, seed_file
from rayfolio.training.export import (
    EXPORT_JSON,
    ExportReport,
    GateLimits,
    export_forecaster,
    torch_threads,
)
from rayfolio.training.models import build_model
from rayfolio.training.onnx_runtime import OnnxForecaster, OnnxRuntimeMissing, onnx_file
from rayfolio.training.panel import Normalizer, windows
from rayfolio.training.registry import ModelRegistry, RegistryError
from tests.training.conftest import TINY_SPLITS

FAST = GateLimits(latency_repeats=3)
LSTM, TRANSFORMER, GAT = "lstm-forecaster", "transformer-forecaster", "gat-forecaster"


def register(registry, store, panel, family: str, seeds: int = 1, damaged: bool = False) -> None:
    """An untrained tiny forecaster of ``family`` registered as the main job would (stage auto).
    ``damaged``: an exploded weight (20) from feature 0 into every LSTM gate row, and feature 0
    scaled to ~0 by its normaliser: torch's forecasts barely notice, but the weight sets the int8
    scale of every row, so int8 rounds the real weights to nothing."""
    config = TrainConfig(family=family, hidden=8, window=10, layers=1, graph_k=2, graph_lookback=20, graph_sector_k=0)
    normalizer = NormalizerParams.of(Normalizer.fit(panel.features[:300]))
    if damaged:
        normalizer = normalizer.model_copy(update={"std": (1e6, *normalizer.std[1:])})
    card = ForecasterCard(train=config, feature_names=panel.feature_names, horizons=panel.horizons,
                          normalizer=normalizer, symbols=tuple(panel.symbols.tolist()),
                          calendar=Calendar.of(store, PurgedDateSplitter(TINY_SPLITS, purge=20)))  # fmt: skip
    states = {}
    for i in range(seeds):
        torch.manual_seed(i)
        model = build_model(family, card.model_kwargs())
        if damaged:
            with torch.no_grad():
                model.lstm.weight_ih_l0[:, 0] = 20.0
        states[seed_file(i)] = model.state_dict()
    metrics = {"by_split_and_horizon": [{"split": "validation", "horizon": h, "rank_ic": 0.02} for h in panel.horizons]}
    registry.register(card, states, metrics=metrics)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch on one thread, as a serving replica (a fraction of a CPU) runs it: tiny nets on a busy
    2-core machine spend more on waking threads than on arithmetic (44 ms an LSTM call, not 1)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def exported(tiny_store, tiny_panel, tmp_path_factory):
    """A registry of v0001 (torch) forecasters and v0002 exports of the LSTM (by the CLI) and the
    Transformer (by the API), both with int8; what the CLI printed and the Transformer's report."""
    root = tmp_path_factory.mktemp("export") / "registry"
    registry = ModelRegistry(root)
    register(registry, tiny_store, tiny_panel, "lstm", seeds=2)
    register(registry, tiny_store, tiny_panel, "transformer")
    register(registry, tiny_store, tiny_panel, "gat")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["models", "export", LSTM, "--runtime", "onnx", "--quantize", "int8", "--registry", str(root),
                     "--store", str(tiny_store.path)])  # fmt: skip
    assert code == 0
    report = export_forecaster(registry, TRANSFORMER, tiny_panel, quantize="int8", limits=FAST).report
    return registry, printed.getvalue(), report


@pytest.mark.parametrize("name", [LSTM, TRANSFORMER])
def test_exports_agree_with_torch_within_the_gate(exported, tiny_panel, name):
    registry, printed, _ = exported
    source, version = registry.get(name, "v0001"), registry.get(name, "v0002")
    assert registry.stage_of(version) == "staging" and registry.stage_of(source) == "production"
    report = ExportReport.model_validate_json(registry.load_bytes(version, EXPORT_JSON))
    assert report.passed and report.source_version == "v0001" and report.runtimes == ("onnx", "onnx-int8")
    assert set(report.fp32_max_abs_diff) == {1, 8} and max(report.fp32_max_abs_diff.values()) <= 1e-5
    assert min(v for r in report.runtimes for v in report.median_spearman[r].values()) >= 0.99
    assert max(v for r in report.runtimes for v in report.rank_ic_shift[r].values()) <= 0.005
    assert all(set(by) == {"torch", "onnx", "onnx-int8"} and min(by.values()) > 0 for by in report.latency_ms.values())
    # The same card marked with its runtimes, the same torch weights byte for byte, every file checksummed.
    assert version.card.export.runtimes == ("onnx", "onnx-int8") and version.card.export.source_version == "v0001"
    assert version.card.model_copy(update={"export": None}) == source.card
    seeds = 2 if name == LSTM else 1
    for i in range(seeds):
        assert registry.load_bytes(version, seed_file(i)) == registry.load_bytes(source, seed_file(i))
    assert set(version.manifest["files"]) >= {onnx_file(i, r) for i in range(seeds) for r in ("onnx", "onnx-int8")}
    if name == LSTM:  # the CLI printed the gate's table and the new version
        assert "fp32 max abs(onnx - torch), batch 8" in printed and "onnx-int8 median per-date Spearman" in printed
        assert f"{LSTM}: v0002 (staging) exported from v0001" in printed
    # Checked here too, not only by the gate: each seed's fp32 graph against its torch module on 3 dates.
    (member,) = load_forecasters(registry, tiny_panel, versions={name: "v0001"})
    t = np.arange(200, 203)
    x, graph = torch.from_numpy(windows(member.scaled, t, member.window)), torch.from_numpy(member.neighbours[t])
    for i, model in enumerate(member.models):
        onnx = OnnxForecaster(registry.load_bytes(version, onnx_file(i)))
        with torch.no_grad():
            assert (onnx(x, graph) - model(x, graph)).abs().max() <= 1e-5


def test_the_onnx_runtime_gives_the_torch_ensemble_forecasts(exported, tiny_panel):
    registry, _, _ = exported
    versions = {LSTM: "v0002", TRANSFORMER: "v0002", GAT: "v0001"}
    by_runtime = {r: load_forecasters(registry, tiny_panel, versions=versions, runtime=r)
                  for r in ("torch", "onnx", "onnx-int8")}  # fmt: skip
    for runtime, members in by_runtime.items():  # ONNX sessions where exported; the GAT stays in torch
        kinds = {f.name: {type(m).__name__ for m in f.models} for f in members}
        onnx = {"OnnxForecaster"} if runtime != "torch" else {"LSTMForecaster"}
        assert kinds[LSTM] == onnx and kinds[GAT] == {"GATForecaster"} and len(members[0].models) == 2
    torch_ensemble, onnx_ensemble = (ForecastEnsemble(by_runtime[r], tiny_panel) for r in ("torch", "onnx"))
    for t in (150, 400, len(tiny_panel.dates) - 1):
        a, b = torch_ensemble.forecast(t), onnx_ensemble.forecast(t)
        assert np.abs(a.z - b.z).max() <= 1e-5 and np.abs(a.expected_return - b.expected_return).max() <= 1e-5
        for name in versions:
            assert np.abs(a.scores[name] - b.scores[name]).max() <= 1e-5


def test_a_version_without_the_runtime_files_is_refused_by_name(exported, tiny_panel, monkeypatch):
    registry, _, _ = exported
    with pytest.raises(RegistryError, match=r"lstm-forecaster v0001 has no model-int8\.onnx for runtime 'onnx-int8'"):
        load_forecasters(registry, tiny_panel, versions={LSTM: "v0001"}, runtime="onnx-int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where the export extra is not installed
    with pytest.raises(OnnxRuntimeMissing, match=r"onnxruntime is not installed.*pip install 'rayfolio\[export\]'"):
        load_forecasters(registry, tiny_panel, versions={LSTM: "v0002"}, runtime="onnx")


def test_a_tampered_onnx_file_is_refused_at_load(exported, tiny_panel, tmp_path):
    shutil.copytree(exported[0].root, tmp_path / "registry")
    registry = ModelRegistry(tmp_path / "registry")
    verified = registry.get(LSTM, "v0002")
    path = registry.root / LSTM / "v0002" / onnx_file(1, "onnx-int8")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"v0002/model-int8-seed1\.onnx: sha256 does not match manifest\.json"):
        load_forecasters(registry, tiny_panel, versions={LSTM: "v0002"}, runtime="onnx-int8")
    # Swapped after the version was verified: the bytes a session is built from are the bytes checked.
    with pytest.raises(RegistryError, match=r"model-int8-seed1\.onnx: sha256 does not match"):
        registry.load_bytes(verified, onnx_file(1, "onnx-int8"))


def test_the_gate_refuses_a_model_int8_destroys_and_registers_nothing(tiny_store, tiny_panel, tmp_path, capsys):
    registry = ModelRegistry(tmp_path / "registry")
    register(registry, tiny_store, tiny_panel, "lstm", damaged=True)
    capsys.readouterr()  # (the registration's log line, where an earlier command set up logging)
    code = main(["models", "export", LSTM, "--runtime", "onnx", "--quantize", "int8", "--registry",
                 str(registry.root), "--store", str(tiny_store.path)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "export gate refused lstm-forecaster v0001, nothing registered: onnx-int8 median per-date Spearman" in err
    assert sorted(p.name for p in (registry.root / LSTM).iterdir()) == ["stages.json", "v0001"]  # nothing half-written
    # The figures, printed before the error line: a real failure, fp32 ONNX matches torch, int8 lost the ranking.
    ok = {row.split("|")[1].strip(): row.split("|")[-2].strip() for row in out.splitlines() if row.count("|") == 5}
    assert ok["fp32 max abs(onnx - torch), batch 8"] == ok["onnx median per-date Spearman vs torch, 5d"] == "True"
    assert "False" in {v for k, v in ok.items() if k.startswith("onnx-int8 median per-date Spearman")}


def test_the_cli_refuses_a_gat_in_one_line(exported, capsys):
    registry, _, _ = exported
    code = main(["models", "export", GAT, "--runtime", "onnx", "--registry", str(registry.root)])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().count("\n") == 0
    assert "gat-forecaster: the GAT stays in torch: its PyTorch Geometric scatter ops do not export to ONNX" in err
    assert registry.versions(GAT) == ["v0001"]
    assert any("stays in torch" in w for w in CATALOG["gat"].weaknesses)


def test_the_ensemble_deployment_serves_an_exported_version(exported, tiny_store, tmp_path):
    shutil.copytree(exported[0].root, tmp_path / "registry")
    registry = ModelRegistry(tmp_path / "registry")
    for name in (LSTM, TRANSFORMER):
        registry.promote(name, "v0002")
    args = {"store": str(tiny_store.path), "registry": str(registry.root),
            "splits": TINY_SPLITS.model_dump(mode="json"), "audit_url": sqlite_url(tmp_path / "audit.db")}  # fmt: skip
    # The serve config's args take the runtime; anything else is refused.
    assert settings_from_args({**args, "forecaster_runtime": "onnx"}).forecaster_runtime == "onnx"
    with pytest.raises(ValidationError, match="forecaster_runtime"):
        ServeSettings.model_validate({**args, "forecaster_runtime": "tensorrt"})
    served = {r: Ensemble({**args, "forecaster_runtime": r}) for r in ("torch", "onnx")}
    assert served["onnx"].info()["versions"] == {GAT: "v0001", LSTM: "v0002", TRANSFORMER: "v0002"}
    t = len(served["torch"].watch.panel.dates) - 1
    a, b = (asyncio.run(served[r].forecast(t)) for r in ("torch", "onnx"))
    assert np.abs(a.z - b.z).max() <= 1e-5 and np.abs(a.expected_return - b.expected_return).max() <= 1e-5
    # A tampered graph: a new replica refuses to load, naming the file; a reload keeps serving and says why.
    path = registry.root / LSTM / "v0002" / onnx_file(0)
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    with pytest.raises(RegistryError, match=r"lstm-forecaster/v0002/model\.onnx: sha256 does not match"):
        Ensemble({**args, "forecaster_runtime": "onnx"})
    reloaded = served["onnx"].reload()
    assert "model.onnx: sha256 does not match" in reloaded["error"] and str(registry.root) not in reloaded["error"]
    assert reloaded["versions"][LSTM] == "v0002"
