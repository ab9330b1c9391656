"""Schemathesis (4.x) against the API with ALL of its checks (conformance, positive and negative
data, unsupported methods, missing headers, auth...), with a user key and with an admin key:
it must find nothing.

The app runs in this process under uvicorn: the same ``create_app`` and service as an ingress
replica, with the deployments' classes in-process (``LocalHandle``), so thousands of requests
take seconds, not Ray's Python proxy's minutes; what is fuzzed is rayfolio's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.tiny_market import ADMIN, USER, in_process_service, serve_in_thread, tiny_settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

CASES = int(os.environ.get("RAYFOLIO_FUZZ_CASES", 60))  # per operation and phase; ~1 min per key here


@pytest.fixture(scope="module")
def api_url(ray_session, tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("fuzz"), rate_per_key=1e6, burst_per_key=10**6,
                             explain_samples=10, explain_background=2)  # fmt: skip
    url, stop = serve_in_thread(in_process_service(settings, keys=f"{USER},{ADMIN}:admin"))
    assert httpx.get(f"{url}/readyz", timeout=120).status_code == 200  # the document then names the market
    yield url
    stop()


@pytest.mark.parametrize("key", [USER, ADMIN], ids=["user-key", "admin-key"])
def test_schemathesis_with_every_check_finds_nothing(api_url, key, tmp_path):
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{api_url}/openapi.json", "--checks", "all",
               "--header", f"Authorization: Bearer {key}", "--max-examples", str(CASES), "--workers", "1",
               "--seed", "1", "--phases", "examples,coverage,fuzzing", "--request-timeout", "60",
               "--no-color", "--suppress-health-check", "all",
               # Each valid body would start a real Ray job (a whole run, say) on the session's Ray:
               # tests/serving/test_jobs.py submits its own.
               "--exclude-operation-id", "submit_job"]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.schemathesis_hooks"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
