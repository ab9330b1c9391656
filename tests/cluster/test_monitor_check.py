"""`rayfolio monitor check`: levels read and printed, exit 3 on critical, missing files refused in one
line; with --submit a critical level submits `rayfolio run --store DIR --stage staging` (on a real
cluster: the job runs that command); and that command trains on the existing store without rebuilding
it and registers the forecasters to staging only."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from rayfolio.cluster.cli import main
from rayfolio.cluster.commands import monitor_check
from rayfolio.cluster.commands.monitor_check import MonitorLevel, read_level, retraining_command
from rayfolio.cluster.commands.run import STAGES
from rayfolio.data.store import MANIFEST, STORE_FORMAT
from rayfolio.training.registry import ModelRegistry
from tests.cluster.local_cluster import start_cluster
from tests.cluster.test_cli import tiny_run_config

RAYFOLIO = [sys.executable, "-m", "rayfolio.cluster.cli"]


def write_level(path: Path, level: str, reasons: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"level": level, "reasons": list(reasons), "window": ["2024-01-02", "2024-03-28"],
                                "created_at": "2024-03-29T06:00:00+00:00"}))  # fmt: skip
    return path


@pytest.fixture
def monitor(tmp_path) -> Path:
    """runs/monitor with an info drift file and a warning performance file."""
    out = tmp_path / "monitor"
    write_level(out / "drift.json", "info")
    write_level(out / "performance.json", "warning", ["20d: mean Rank IC 0.004 over 60 dates, near the floor 0"])
    return out


@pytest.fixture
def submitted(monkeypatch) -> list[dict]:
    """Every call of the job submission, recorded instead of made; each prints a job id."""
    calls = []

    def fake_submit(command, address=None, *, wait=True, stream=sys.stdout, **kwargs):
        calls.append({"command": list(command), "address": address, "wait": wait, **kwargs})
        print("rayfolio-run-0000abcd", file=stream)
        return 0

    monkeypatch.setattr("rayfolio.cluster.submit.submit", fake_submit)
    return calls


def test_levels_are_printed_with_reasons_and_no_critical_exits_0(monitor, submitted, capsys):
    assert main(["monitor", "check", "--out", str(monitor), "--submit"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"drift: info ({monitor / 'drift.json'}, window 2024-01-02 .. 2024-03-28)",
        f"performance: warning ({monitor / 'performance.json'}, window 2024-01-02 .. 2024-03-28)",
        "  20d: mean Rank IC 0.004 over 60 dates, near the floor 0",
    ]
    assert submitted == []  # nothing critical: nothing to retrain


def test_a_critical_level_exits_3_and_says_how_to_retrain(monitor, submitted, capsys):
    write_level(monitor / "drift.json", "critical", ["ret_20: PSI 0.412 >= critical threshold 0.250"])
    assert main(["monitor", "check", "--out", str(monitor)]) == 3
    out = capsys.readouterr().out
    assert "drift: critical" in out and "  ret_20: PSI 0.412 >= critical threshold 0.250" in out
    assert "`rayfolio monitor check --submit` starts a retraining" in out
    assert submitted == []  # without --submit the check only reports


def test_explicit_files_beat_the_out_directory(tmp_path, monitor, capsys):
    other = write_level(tmp_path / "elsewhere" / "d.json", "critical", ["vol_60: PSI 0.3 >= critical 0.25"])
    assert main(["monitor", "check", "--out", str(monitor), "--drift", str(other)]) == 3
    assert f"drift: critical ({other}" in capsys.readouterr().out


def test_the_default_out_is_the_configs_runs_monitor(tmp_path, capsys):
    config = tiny_run_config(tmp_path)  # runs_dir: tmp_path/runs
    write_level(tmp_path / "runs" / "monitor" / "drift.json", "info")
    write_level(tmp_path / "runs" / "monitor" / "performance.json", "info")
    assert main(["monitor", "check", "--config", str(config)]) == 0
    assert f"drift: info ({tmp_path / 'runs' / 'monitor' / 'drift.json'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "drift.json: no such file (write it with `rayfolio monitor drift`)"),
        ("{not json", "drift.json: not a readable JSON file"),
        (json.dumps({"level": "severe", "reasons": []}), "drift.json: 'level' must be one of info, warning, critical, "
                                                         "got 'severe'"),
        (json.dumps(["critical"]), "drift.json: 'level' must be one of info, warning, critical, got None"),
        (json.dumps({"level": "critical", "reasons": "ret_20"}), "drift.json: 'reasons' must be a list of strings"),
    ],
)  # fmt: skip
def test_a_missing_or_malformed_file_is_one_line_and_exit_2(monitor, submitted, capsys, content, message):
    drift = monitor / "drift.json"
    drift.unlink()
    if content is not None:
        drift.write_text(content)
    assert main(["monitor", "check", "--out", str(monitor), "--submit"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1, printed.err
    assert printed.err.startswith(f"rayfolio: error: {monitor}/") and message in printed.err
    assert submitted == []


def test_submit_on_critical_submits_the_staging_retraining_and_prints_its_id(tmp_path, monitor, submitted, capsys,
                                                                             monkeypatch):  # fmt: skip
    write_level(monitor / "performance.json", "critical", ["20d: mean Rank IC -0.031 below the floor 0"])
    monkeypatch.chdir(tmp_path)
    config = tiny_run_config(tmp_path).relative_to(tmp_path)  # relative paths go to the job absolute
    assert main(["monitor", "check", "--out", str(monitor), "--submit", "--config", str(config),
                 "--store", "features", "--address", "http://head:8265"]) == 3  # fmt: skip
    (call,) = submitted
    assert call["command"] == ["run", "--store", str(tmp_path / "features"), "--stage", "staging",
                               "--config", str(tmp_path / config)]  # fmt: skip
    assert call["address"] == "http://head:8265" and call["wait"] is False
    assert "working_dir" not in call  # the job runs in the cluster's working directory, not a copy of this one
    out = capsys.readouterr().out
    assert "retraining submitted: rayfolio-run-0000abcd" in out and "--stage staging" in out
    assert "production" not in " ".join(call["command"])


def test_the_job_server_address_falls_back_to_rays_api_server_variable(monitor, submitted, monkeypatch):
    write_level(monitor / "drift.json", "critical", ["ret_20: PSI 0.4"])
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # inside a Ray job: the GCS, which takes no jobs
    assert main(["monitor", "check", "--out", str(monitor), "--submit"]) == 3
    assert submitted[0]["address"] == "http://127.0.0.1:8265"
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    assert main(["monitor", "check", "--out", str(monitor), "--submit"]) == 3
    assert submitted[1]["address"] is None  # then submit() decides: RAY_ADDRESS, as `rayfolio submit` does


def test_submit_without_any_address_is_one_line_and_exit_2(monitor, monkeypatch, capsys):
    write_level(monitor / "drift.json", "critical", ["ret_20: PSI 0.4"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert main(["monitor", "check", "--out", str(monitor), "--submit"]) == 2
    assert "rayfolio: error: no cluster address: pass --address" in capsys.readouterr().err


def test_read_level_and_the_exit_status(tmp_path):
    info = read_level("drift", write_level(tmp_path / "a.json", "info"))
    assert info == MonitorLevel("drift", tmp_path / "a.json", "info", (), ("2024-01-02", "2024-03-28"))
    warning = read_level("performance", write_level(tmp_path / "b.json", "warning", ["x"]))
    critical = read_level("performance", write_level(tmp_path / "c.json", "critical", ["y"]))
    assert monitor_check.check([info, warning]) == 0 and monitor_check.check([info, critical]) == 3
    assert monitor_check.check([]) == 0


def test_the_run_command_parses_the_retraining_and_never_offers_production(tmp_path):
    from typing import get_args

    from rayfolio.cluster.cli import build_parser
    from rayfolio.training.stage import LastRefitStage

    assert STAGES == get_args(LastRefitStage) and "production" not in STAGES
    args = build_parser().parse_args(retraining_command(tmp_path / "s", tmp_path / "c.yaml"))
    assert (args.command, args.store, args.stage, args.config) == ("run", tmp_path / "s", "staging",
                                                                   tmp_path / "c.yaml")  # fmt: skip


@pytest.mark.slow
def test_run_on_an_existing_store_registers_the_forecasters_to_staging_only(tmp_path, ray_session, capsys):
    """What the retraining job runs: the store is read, not rebuilt, and although the registry has no
    production forecaster yet (stage auto would make these production), they go to staging."""
    config = yaml.safe_load(tiny_run_config(tmp_path).read_text())
    config["forecasters"]["families"] = ["lstm"]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    store = tmp_path / "store"
    assert main(["data", "prepare", "--config", str(path), "--out", str(store)]) == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(store.rglob("*")) if p.is_file()}

    assert main(["run", "--config", str(path), "--store", str(store), "--stage", "staging"]) == 0
    err = capsys.readouterr().err
    assert f"[1/4] data: the existing feature store {store} (not rebuilt)" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(store.rglob("*")) if p.is_file()} == before
    assert not (tmp_path / "runs" / "tiny" / "features").exists()
    registry = ModelRegistry(tmp_path / "registry")
    assert registry.stage_version("lstm-forecaster", "production") is None
    assert registry.stage_version("lstm-forecaster", "staging") == "v0001"
    for allocator in ("ppo-allocator", "sac-allocator", "tilt-allocator"):  # the agents and the tilt too
        assert registry.stage_version(allocator, "production") is None
        assert registry.stage_version(allocator, "staging") == "v0001"
    report = (tmp_path / "runs" / "tiny" / "report.md").read_text()
    assert re.search(rf"\| feature store\s+\| {re.escape(str(store))}\s+\|", report)  # padded to the widest row


def test_run_refuses_a_missing_or_tampered_store_in_one_line(tmp_path, capsys):
    assert main(["run", "--store", str(tmp_path / "nowhere"), "--stage", "staging"]) == 2
    err = capsys.readouterr().err
    assert err == f"rayfolio: error: {tmp_path / 'nowhere'}: not a feature store (no manifest.json)\n"
    store = tmp_path / "store"
    store.mkdir()
    (store / "part-0.parquet").write_bytes(b"tampered")
    (store / MANIFEST).write_text(json.dumps({"format": STORE_FORMAT, "files": {"part-0.parquet": "0" * 64}}))
    assert main(["run", "--store", str(store)]) == 2
    assert capsys.readouterr().err == f"rayfolio: error: {store / 'part-0.parquet'}: sha256 does not match {MANIFEST}\n"


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster(nodes=1, cpus_per_node=1)
    yield started
    started.stop()


@pytest.mark.slow
def test_submit_runs_the_retraining_command_as_a_job_on_a_cluster(cluster, tmp_path):
    """A real job on a real (one-node, token-auth) cluster: it runs `rayfolio run --store ... --stage
    staging`, which refuses the store here (an empty directory) in one line: the command reached the
    cluster's rayfolio whole, and no training started."""
    monitor = tmp_path / "monitor"
    write_level(monitor / "drift.json", "critical", ["ret_20: PSI 0.412 >= critical threshold 0.250"])
    write_level(monitor / "performance.json", "info")
    (tmp_path / "empty").mkdir()
    done = cluster.run([*RAYFOLIO, "monitor", "check", "--out", str(monitor), "--submit", "--store",
                        str(tmp_path / "empty"), "--address", cluster.dashboard_url], timeout=300)  # fmt: skip
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("retraining submitted: ")]
    job_id = line.split()[2]
    assert job_id.startswith("rayfolio-run-")
    script = (
        "import json, sys, time\nfrom ray.job_submission import JobSubmissionClient\n"
        "client = JobSubmissionClient(sys.argv[1])\n"
        "while not client.get_job_status(sys.argv[2]).is_terminal():\n    time.sleep(0.5)\n"
        "info = client.get_job_info(sys.argv[2])\n"
        "print(json.dumps({'status': info.status.value, 'metadata': info.metadata,"
        " 'logs': client.get_job_logs(sys.argv[2])}))\n"
    )
    polled = cluster.run([sys.executable, "-c", script, cluster.dashboard_url, job_id], timeout=300)
    assert polled.returncode == 0, polled.stderr[-3000:]
    job = json.loads(polled.stdout.strip().splitlines()[-1])
    assert job["metadata"]["rayfolio_command"] == f"run --store {tmp_path / 'empty'} --stage staging"
    assert job["status"] == "FAILED"
    assert f"rayfolio: error: {tmp_path / 'empty'}: not a feature store (no manifest.json)" in job["logs"]
