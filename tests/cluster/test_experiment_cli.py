"""``rayfolio experiment status|promote|stop`` as an operator runs them: an audit log of an
experiment's recommendations, a store of the prices that followed and a registry with both
versions; a clear winner is promoted, an undecided one is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from rayfolio.cluster.cli import main
from rayfolio.data.store import FeatureStore
from rayfolio.serving.audit import AuditLog, sqlite_url
from rayfolio.serving.experiment_status import experiment_status
from rayfolio.serving.experiments import conclusion_id
from rayfolio.training.models import build_model
from rayfolio.training.registry import WEIGHTS, ModelRegistry
from tests.serving.test_experiment_status import record, write_store
from tests.training.card_examples import forecaster_card

MODEL = "lstm-forecaster"
DATES = pd.bdate_range("2024-01-02", periods=40)


@pytest.fixture
def root(tmp_path) -> Path:
    """``runs/live/features``: symbol A rises about 1% a day (0.5% noise), B stays flat; a config
    naming that run; a registry with v0001 (production) and v0002 of the model."""
    rng = np.random.default_rng(11)
    closes = pd.DataFrame({"A": 100 * np.cumprod(1 + rng.normal(0.01, 0.005, len(DATES))),
                           "B": np.full(len(DATES), 50.0)}, index=DATES)  # fmt: skip
    write_store(tmp_path / "runs" / "live" / "features", closes)
    (tmp_path / "live.yaml").write_text(yaml.safe_dump({"name": "live", "runs_dir": str(tmp_path / "runs")}))
    registry = ModelRegistry(tmp_path / "registry")
    for seed in (1, 2):
        torch.manual_seed(seed)
        card = forecaster_card()
        registry.register(card, {WEIGHTS: build_model("lstm", card.model_kwargs()).state_dict()}, metrics={})
    assert (registry.stage_version(MODEL), registry.versions(MODEL)) == ("v0001", ["v0001", "v0002"])
    return tmp_path


def write_experiment(root: Path, dates: int, candidate_holds: str = "A") -> Path:
    """Two clients a day for ``dates`` days at runs/live/audit.db: the candidate puts everything
    in ``candidate_holds``, the control stays in cash."""
    log = AuditLog(sqlite_url(root / "runs" / "live" / "audit.db"))
    entries = [record(f"{client}-{day.date()}", day.date(), {}, {"CASH": 1.0}, {candidate_holds: 1.0}, arm,
                      latency=(2.0, 3.0), model=MODEL)
               for day in DATES[:dates] for client, arm in (("a", "control"), ("b", "candidate"))]  # fmt: skip
    log.append_many(entries)
    return root / "runs" / "live" / "audit.db"


def cli(root: Path, *args: str) -> list[str]:
    return ["experiment", *args, "canary", "--config", str(root / "live.yaml")]


def test_status_prints_each_arm_the_comparison_and_the_decision(root, capsys):
    audit = write_experiment(root, dates=12)
    assert main(cli(root, "status")) == 0  # the run's audit log and store by default
    printed = capsys.readouterr().out
    assert "experiment canary: lstm-forecaster v0001 (control) vs v0002 (candidate); 24 recommendations" in printed
    assert "| control   | v0001" in printed and "| candidate | v0002" in printed
    assert "12 realised dates (24 requests scored, 0 pending, 0 with a failed arm)" in printed
    assert "decision: continue\n  12 realised dates, 20 needed" in printed
    assert main([*cli(root, "status"), "--format", "json", "--cost-bps", "5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    store = FeatureStore(root / "runs" / "live" / "features")
    expected = experiment_status(AuditLog(sqlite_url(audit)), "canary", store, cost_bps=5.0)
    assert shown == expected.model_dump(mode="json") and shown["comparison"]["cost_bps"] == 5.0


def test_promote_is_refused_with_exit_2_while_the_decision_is_continue(root, capsys):
    audit = write_experiment(root, dates=12)
    assert main([*cli(root, "promote"), "--registry", str(root / "registry")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rayfolio: error: experiment 'canary': the decision is continue, not promote (12 realised dates, "
                   "20 needed)"]  # fmt: skip
    assert ModelRegistry(root / "registry").stage_version(MODEL) == "v0001"
    assert AuditLog(sqlite_url(audit)).get(conclusion_id("canary")) is None


def test_promote_moves_the_production_pointer_once_the_decision_is_promote(root, capsys):
    audit = write_experiment(root, dates=30)  # the candidate earns ~1% a day more than cash
    assert main([*cli(root, "status")]) == 0
    assert "decision: promote" in capsys.readouterr().out
    assert main([*cli(root, "promote"), "--registry", str(root / "registry")]) == 0
    printed = capsys.readouterr().out
    assert "experiment canary: promoted by cli" in printed and f"{MODEL} production: v0001 -> v0002" in printed
    assert ModelRegistry(root / "registry").stage_version(MODEL) == "v0002"
    conclusion = AuditLog(sqlite_url(audit)).get(conclusion_id("canary"))
    assert conclusion.kind == "experiment" and conclusion.payload["action"] == "promote"
    assert conclusion.payload["status"]["decision"] == "promote"
    assert main([*cli(root, "promote"), "--registry", str(root / "registry")]) == 2
    assert "experiment 'canary' was already promoted by cli" in capsys.readouterr().err
    assert main(cli(root, "status")) == 0
    assert "decision: promoted\n  promoted by cli" in capsys.readouterr().out


def test_stop_records_the_end_and_moves_nothing(root, capsys):
    write_experiment(root, dates=30, candidate_holds="B")  # no edge: 10 bp of costs a day behind
    assert main(cli(root, "stop")) == 0
    printed = capsys.readouterr().out
    assert "experiment canary: stopped by cli" in printed and "no registry change" in printed
    assert ModelRegistry(root / "registry").stage_version(MODEL) == "v0001"
    assert main([*cli(root, "promote"), "--registry", str(root / "registry")]) == 2
    assert "was already stopped" in capsys.readouterr().err


def test_an_unknown_experiment_or_a_missing_audit_log_is_one_line(root, capsys):
    write_experiment(root, dates=3)
    assert main(["experiment", "status", "nope", "--config", str(root / "live.yaml")]) == 2
    assert capsys.readouterr().err.strip() == ("rayfolio: error: experiment 'nope': no recommendation in the audit "
                                               "log names it")  # fmt: skip
    missing = root / "elsewhere.db"
    assert main([*cli(root, "status"), "--audit", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"rayfolio: error: audit log sqlite:///{missing}: no such file"
    assert not missing.exists()
    assert main([*cli(root, "status"), "--store", str(root / "nostore")]) == 2
    assert "not a feature store" in capsys.readouterr().err
