"""`rayfolio submit` and the main job on a real two-node Ray cluster (head +
one more node on this machine, token auth), asserted from the Ray state API."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from rayfolio.cluster.cli import main
from tests.cluster.local_cluster import start_cluster
from tests.cluster.test_cli import tiny_run_config

REPO = Path(__file__).resolve().parents[2]
RAYFOLIO = [sys.executable, "-m", "rayfolio.cluster.cli"]


@pytest.fixture(scope="module")
def cluster():
    started = start_cluster(nodes=2, cpus_per_node=2)
    yield started
    started.stop()


def test_submit_without_an_address_says_how_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["submit", "--", "models", "list"]) == 2
    assert "no cluster address: pass --address http://HEAD:8265" in capsys.readouterr().err
    assert main(["submit", "--address", "http://127.0.0.1:9", "--", "models", "list"]) == 2
    assert "cannot reach the Ray job server at http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["submit", "--address", "http://127.0.0.1:9"]) == 2
    assert "nothing to submit" in capsys.readouterr().err


def test_a_failing_job_reports_failed_and_exits_non_zero(cluster, tmp_path):
    done = cluster.run([*RAYFOLIO, "submit", "--working-dir", str(REPO), "--", "models", "promote", "nope", "v0009",
                        "--registry", str(tmp_path)], cwd=REPO)  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rayfolio: error: model 'nope' has no version 'v0009'" in done.stdout, done.stdout[-3000:]
    last = done.stdout.splitlines()[-1]
    assert last.startswith("job rayfolio-models-") and " FAILED: " in last


def test_the_main_job_runs_across_two_nodes_and_writes_to_shared_storage(cluster, tmp_path):
    """`rayfolio submit -- run`: data tasks and both DDP workers on different nodes, report on the shared path."""
    config_path = tiny_run_config(tmp_path)  # runs_dir and registry: absolute paths (this machine's shared disk)
    config = yaml.safe_load(config_path.read_text())
    config["data"]["synthetic"]["n_assets"] = 50  # two Ray Data read tasks (25 assets each)
    config["forecasters"]["families"] = ["lstm"]
    config["forecasters"]["scaling"] = {"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "SPREAD"}
    config["ray"] = {}  # the job's driver joins the cluster it runs on
    config_path.write_text(yaml.safe_dump(config))
    done = cluster.run([*RAYFOLIO, "submit", "--working-dir", str(tmp_path), "--", "run", "--config", config_path.name],
                       cwd=tmp_path, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout.splitlines()[-1] and "[3/4] allocation" in done.stdout
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "report.md").is_file() and (run_dir / "metrics.json").is_file()
    assert (tmp_path / "registry" / "lstm-forecaster").is_dir()

    state = cluster.state()
    assert len(state["nodes"]) == 2
    workers = [a for a in state["actors"] if a["class_name"] == "RayTrainWorker"]
    assert workers and len({w["node_id"] for w in workers}) == 2, workers
    data_tasks = Counter(t["node_id"] for t in state["tasks"] if t["name"].startswith(("ReadSource", "Read", "Map")))
    assert len(data_tasks) == 2, Counter((t["name"], (t["node_id"] or "-")[:6]) for t in state["tasks"])
