"""What `rayfolio serve` listens on: its HTTP servers (the Serve proxy with the API, the Ray
dashboard) on 127.0.0.1 only, unless --host says otherwise.

Ray's own internal servers (GCS, raylet, object manager, workers' gRPC, agents) bind every
interface and Ray has no option to change that; they answer only callers holding the
cluster's token (token auth is on), and a firewall or network policy should keep them
private (README, "Security")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import yaml

from bench.tiny_market import SPLITS, USER, auth, free_port, tiny_settings

pytestmark = pytest.mark.slow


def listening(root: psutil.Process) -> list[tuple[str, int, str]]:
    """(address, port, command) of every TCP socket listened on by ``root`` and its descendants."""
    pids = {p.pid: " ".join(p.cmdline())[:200] for p in [root, *root.children(recursive=True)] if p.is_running()}
    return sorted((c.laddr.ip, c.laddr.port, pids[c.pid]) for c in psutil.net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN and c.pid in pids)  # fmt: skip


def test_rayfolio_serve_binds_its_http_servers_to_localhost(ray_session, tmp_path):
    import re
    import shutil
    import tempfile

    settings = tiny_settings(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "ports", "runs_dir": str(tmp_path / "runs"),
                                      "splits": SPLITS.model_dump(mode="json")}))  # fmt: skip
    port, log = free_port(), tmp_path / "serve.log"
    ray_dir = tempfile.mkdtemp(prefix="rf-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAYFOLIO_API_KEYS": USER, "RAY_TMPDIR": ray_dir}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "rayfolio.cluster.cli", "serve", "--config", str(config), "--store",
               str(settings.store), "--registry", str(settings.registry), "--port", str(port),
               "--allocator", "ppo-allocator"]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, ready = time.monotonic() + 240, False
        while time.monotonic() < deadline and server.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                time.sleep(1)
        assert ready, f"rayfolio serve did not become ready ({server.poll()}): {log.read_text()[-2000:]}"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/recommendations", json={}, headers=auth(USER), timeout=30)
        assert r.status_code == 200, r.text
        # It says where the console is (once serve.run has returned there, which can be just after /readyz
        # answers), and the console is there, on the same 127.0.0.1 port.
        console = f"console:  http://127.0.0.1:{port}/ui/"
        deadline = time.monotonic() + 60
        while console not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert console in log.read_text(), log.read_text()[-2000:]
        assert "<title>" in httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=30).text
        dashboard = int(re.search(r"dashboard http://127\.0\.0\.1:(\d+)", log.read_text()).group(1))
        sockets = listening(psutil.Process(server.pid))
        names = {port: "the API (Serve's proxy)", dashboard: "the Ray dashboard"}
        print("\nlistening sockets of rayfolio serve and its Ray instance:")
        for address, p, command_line in sockets:
            print(f"  {address}:{p}  {names.get(p, '')}  {command_line[:90]}")
        for p in (port, dashboard):
            bound = [address for address, q, _ in sockets if q == p]
            assert bound and set(bound) == {"127.0.0.1"}, (names[p], bound)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        shutil.rmtree(ray_dir, ignore_errors=True)
