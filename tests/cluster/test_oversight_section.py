"""The main report's oversight section: its figures are the served path's audit log's."""

from __future__ import annotations

from rayfolio.cluster.served import oversight_section
from rayfolio.data.markdown import Report
from rayfolio.serving.risk import HouseLimits
from rayfolio.serving.schemas import RecommendationRequest
from tests.serving.conftest import make_engine, make_panel


def test_the_section_counts_what_the_approval_rules_held_and_what_each_check_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFOLIO_AUDIT_KEY", "test")  # the engine's audit secret: the section reads it from there
    engine = make_engine(make_panel(), tmp_path / "served_audit.db", HouseLimits(approval_position_change=0.2))
    symbol = engine.symbols[0]
    held = [engine.recommend(RecommendationRequest(portfolio={symbol: 1.0}), "replay") for _ in range(2)]
    plain = engine.recommend(RecommendationRequest(), "replay")
    assert all(r.status == "pending_approval" for r in held)
    report = Report("run")
    oversight_section(report, tmp_path / "served_audit.db")
    (text,) = report.sections
    pending = sum(r.status == "pending_approval" for r in [*held, plain])
    assert f"held {pending} of 3 recommendations" in text and "hash chain verified" in text
    assert engine.audit.records()[-1].hash in text
    changed = sum(c.changed for r in [*held, plain] for c in r.checks if c.name == "max_position")
    row = next(line for line in text.splitlines() if line.startswith("| max_position"))
    assert [cell.strip() for cell in row.split("|")[2:4]] == ["3", str(changed)]
    oversight_section(report, tmp_path / "missing.db")  # no served path: no section, nothing created
    assert len(report.sections) == 1 and not (tmp_path / "missing.db").exists()
