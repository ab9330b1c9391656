"""A real multi-node Ray cluster on this machine, started the way the README
starts one (`ray start --head`, then `ray start --address` per extra node), with
token auth, every port chosen free, everything bound to 127.0.0.1.

Each node is a `ray start --block` process in its own process group; stopping
the cluster ends exactly those groups (never `ray stop`, which would end every
Ray on the machine, the test session's included).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_args(temp_dirs: list[str]) -> list[str]:
    """Free ports, and a temp dir of its own: nodes sharing one machine must not share
    runtime_resources (one node's agent would delete a job's working_dir under the other)."""
    agent, grpc, metrics, runtime_env = free_ports(4)
    temp_dirs.append(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    return [f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
            f"--temp-dir={temp_dirs[-1]}"]  # fmt: skip


@dataclass
class LocalCluster:
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]  # what a client needs: RAY_AUTH_MODE and RAY_AUTH_TOKEN
    processes: list[subprocess.Popen] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)

    def run(self, args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """A command with this cluster's address and token in its environment."""
        env = {**os.environ, **self.env, "RAY_ADDRESS": self.dashboard_url}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)

    def state(self) -> dict:
        """Nodes, actors and tasks from the Ray state API (in a client process with the token)."""
        script = (
            "import json, sys\n"
            "from ray.util.state import list_actors, list_nodes, list_tasks\n"
            "a = sys.argv[1]\n"
            "out = {'nodes': [n.node_id for n in list_nodes(address=a, filters=[('state', '=', 'ALIVE')])],\n"
            "       'actors': [{'class_name': x.class_name, 'node_id': x.node_id, 'job_id': x.job_id}\n"
            "                  for x in list_actors(address=a, limit=10000, detail=True)],\n"
            "       'tasks': [{'name': x.name, 'node_id': x.node_id, 'job_id': x.job_id}\n"
            "                 for x in list_tasks(address=a, limit=10000, detail=True)]}\n"
            "print(json.dumps(out))\n"
        )
        done = self.run([sys.executable, "-c", script, self.dashboard_url], timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def add_node(self, num_cpus: int) -> None:
        self._start([RAY, "start", "--block", f"--address={self.gcs_address}", "--node-ip-address=127.0.0.1",
                     f"--num-cpus={num_cpus}", *_node_args(self.temp_dirs)])  # fmt: skip

    def _start(self, args: list[str]) -> None:
        # As after `source .venv/bin/activate`: a job's `python` is this environment's.
        env = {**os.environ, **self.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        env.pop("RAY_ADDRESS", None)
        self.processes.append(subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))  # fmt: skip

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if len(self.state()["nodes"]) >= n:
                    return
            except AssertionError:
                pass  # the dashboard is not up yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not reach {n} nodes in {timeout:.0f} s")
            time.sleep(2)

    def stop(self) -> None:
        for p in reversed(self.processes):
            try:
                os.killpg(p.pid, signal.SIGTERM)  # `ray start --block` ends its node's processes on SIGTERM
            except ProcessLookupError:
                continue
        for p in reversed(self.processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):  # what is left of the node: all in its process group
                os.killpg(p.pid, signal.SIGKILL)
        for path in self.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


def start_cluster(nodes: int = 2, cpus_per_node: int = 2) -> LocalCluster:
    gcs, dashboard, client = free_ports(3)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    cluster = LocalCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env)
    cluster._start([RAY, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
                    f"--num-cpus={cpus_per_node}", *_node_args(cluster.temp_dirs)])  # fmt: skip
    try:
        cluster.wait_for_nodes(1)
        for _ in range(nodes - 1):
            cluster.add_node(cpus_per_node)
        cluster.wait_for_nodes(nodes)
    except BaseException:
        cluster.stop()
        raise
    return cluster
