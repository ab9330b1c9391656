"""``rayfolio audit report|verify`` as a user runs them: the three formats to stdout and to files, the
run config's default log, the exit codes and the one-line errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from rayfolio.cluster.cli import main
from tests.serving.test_compliance import build_log


@pytest.fixture
def log_path(tmp_path) -> Path:
    build_log(tmp_path / "audit.db")
    return tmp_path / "audit.db"


def raw_counts(path: Path) -> tuple[int, int]:
    """(records, recommendations), straight from the table."""
    with sqlite3.connect(path) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM audit_records")]
    return len(kinds), kinds.count("recommendation")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("rayfolio: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_report_in_each_format(log_path, tmp_path, capsys):
    records, recommendations = raw_counts(log_path)
    assert main(["audit", "report", "--audit", str(log_path)]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("# Audit compliance report") and f"{recommendations} recommendations;" in markdown
    today = dt.datetime.now(dt.UTC).date().isoformat()  # every record was written just now
    out = tmp_path / "reports" / "report.json"
    out.parent.mkdir()
    assert main(["audit", "report", "--audit", str(log_path), "--from", today, "--to", today, "--format", "json",
                 "--out", str(out)]) == 0  # fmt: skip
    assert f"written: {out}" in capsys.readouterr().out and [p.name for p in out.parent.iterdir()] == ["report.json"]
    report = json.loads(out.read_text())
    assert report["database"]["chain"] == {"ok": True, "records": records, "first_bad_seq": None, "reason": ""}
    assert report["database"]["records_in_window"] == records
    assert report["recommendations"]["total"] == recommendations
    assert main(["audit", "report", "--audit", f"sqlite:///{log_path}", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["section", "key", "value"]
    assert ["recommendations", "total", str(recommendations)] in rows


def test_the_window_is_checked_and_the_default_log_comes_from_the_run_config(log_path, tmp_path, capsys):
    assert main(["audit", "report", "--audit", str(log_path), "--from", "2024-02-02", "--to", "2024-02-01"]) == 2
    assert one_line_error(capsys) == "rayfolio: error: --from 2024-02-02 is after --to 2024-02-01"
    with pytest.raises(SystemExit) as exited:
        main(["audit", "report", "--from", "02/01/2024"])
    assert exited.value.code == 2 and "dates are YYYY-MM-DD" in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"name": "desk", "runs_dir": str(tmp_path / "runs")}))
    assert main(["audit", "report", "--config", str(config)]) == 2
    assert one_line_error(capsys).endswith(f"{tmp_path / 'runs' / 'desk' / 'audit.db'}: no such file")
    assert not (tmp_path / "runs").exists()  # reading created nothing
    build_log(tmp_path / "runs" / "desk" / "audit.db")
    assert main(["audit", "report", "--config", str(config), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["database"]["url"].endswith("runs/desk/audit.db")
    assert main(["audit", "report", "--config", str(config), "--out", str(tmp_path / "no" / "dir" / "r.md")]) == 2
    assert "cannot be written" in one_line_error(capsys)


def test_verify_exit_codes(log_path, capsys):
    records, _ = raw_counts(log_path)
    assert main(["audit", "verify", "--audit", str(log_path)]) == 0
    assert capsys.readouterr().out.startswith(f"audit chain intact: {records} records")
    with sqlite3.connect(log_path) as db:
        db.execute("UPDATE audit_records SET key_id = 'someone-else' WHERE seq = 5")
    assert main(["audit", "verify", "--audit", str(log_path)]) == 3
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("audit chain BROKEN at record 5: record 5 was changed")
    assert main(["audit", "report", "--audit", str(log_path), "--format", "json"]) == 0  # a report still comes out
    assert json.loads(capsys.readouterr().out)["database"]["chain"]["first_bad_seq"] == 5
    assert main(["audit", "verify", "--audit", str(log_path.with_name("missing.db"))]) == 2
    assert one_line_error(capsys).endswith("missing.db: no such file")
    assert not log_path.with_name("missing.db").exists()
