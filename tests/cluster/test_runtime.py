"""Local dev mode is local: no address anywhere means a new Ray for this command,
whatever Ray's ``ray_current_cluster`` file names."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
import yaml

from rayfolio.cluster import runtime
from rayfolio.cluster.config import RayConfig


@pytest.fixture
def ray_init_calls(monkeypatch):
    """ray.init's arguments, without starting Ray."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(runtime, "_ray_data_progress", lambda shown: None)
    return calls


def test_no_address_anywhere_starts_a_local_ray(ray_init_calls, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with runtime.ray_connection(RayConfig(num_cpus=2)):
        pass
    assert ray_init_calls[0]["address"] == "local" and ray_init_calls[0]["num_cpus"] == 2


@pytest.mark.parametrize(
    ("flag", "config", "env", "expected"),
    [
        ("ray://head:10001", "10.0.0.1:6379", "auto", "ray://head:10001"),
        (None, "10.0.0.1:6379", "auto", "10.0.0.1:6379"),
        (None, None, "auto", "auto"),
    ],
)
def test_an_address_joins_that_cluster_flag_then_config_then_environment(
    flag, config, env, expected, ray_init_calls, monkeypatch
):
    monkeypatch.setenv("RAY_ADDRESS", env)
    with runtime.ray_connection(RayConfig(address=config), flag):
        pass
    assert ray_init_calls[0]["address"] == expected


def test_ray_output_is_quiet_unless_verbose(ray_init_calls, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    rayfolio_logger = logging.getLogger("rayfolio")
    before = rayfolio_logger.level
    try:
        for level in (logging.INFO, logging.DEBUG):  # the CLI's default, then --verbose
            rayfolio_logger.setLevel(level)
            with runtime.ray_connection(RayConfig()):
                pass
    finally:
        rayfolio_logger.setLevel(before)
    quiet, verbose = ray_init_calls
    assert quiet["log_to_driver"] is False and quiet["logging_level"] == logging.ERROR
    assert verbose["log_to_driver"] is True and verbose["logging_level"] == logging.INFO


def test_a_stale_cluster_address_file_is_ignored(tmp_path):
    """A crashed `ray start` cluster left its address in Ray's temp dir: `ray.init()` would retry
    it for minutes. The command runs on its own local Ray and finishes."""
    # A short private temp dir: Ray's socket paths under it must stay within the OS limit.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))
    try:
        for folder in (ray_tmp, ray_tmp / "ray"):  # where Ray reads it: $RAY_TMPDIR/ray/ray_current_cluster
            folder.mkdir(exist_ok=True)
            (folder / "ray_current_cluster").write_text("127.0.0.1:1\n")
        config = tmp_path / "one-cpu.yaml"
        config.write_text(yaml.safe_dump({"ray": {"num_cpus": 1}}))
        out = tmp_path / "store"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
        command = [sys.executable, "-m", "rayfolio.cluster.cli", "data", "prepare", "--config", str(config),
                   "--source", "synthetic", "--assets", "2", "--days", "300", "--out", str(out)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=420, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "local dev mode" in done.stderr and "rows:     600" in done.stdout
        assert (out / "manifest.json").is_file()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_workers_find_their_own_ray_beside_another_local_ray(ray_session, tmp_path):
    """Ray Train's placement-group cleaner asks the state API from a worker; with a second local
    Ray on the machine, an unnamed Ray makes it fail ("multiple active Ray instances") and stopped
    trials' CPUs are never freed. The session's Ray is named to its workers, so the lookup works."""
    started = f"ray.init(address='local', num_cpus=1, include_dashboard=False); open(r'{tmp_path / 'up'}', 'w')"
    other = subprocess.Popen(
        [sys.executable, "-c", f"import ray, time; {started}.close(); time.sleep(120)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(120):
            if (tmp_path / "up").exists() or other.poll() is not None:
                break
            time.sleep(0.5)
        assert (tmp_path / "up").exists(), "the second local Ray did not start"

        @ray.remote
        class Probe:
            def alive(self, actor_id: str):
                from ray.train.v2._internal.state.util import is_actor_alive

                return is_actor_alive(actor_id, timeout=20)

        probe = Probe.remote()
        assert ray.get(probe.alive.remote(probe._actor_id.hex())) is True
    finally:
        other.kill()
        other.wait()
