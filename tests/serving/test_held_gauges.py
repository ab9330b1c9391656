"""Monitor gauges stay exported after the command that set them has ended."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import httpx

SET_AND_EXIT = """
import ray
from rayfolio.serving.held_gauges import hold_gauge

ray.init(address="{address}")
assert hold_gauge("rayfolio_test_held_level", "a level a short command measured", "feature", {{"ret_1": 2.0}})
"""


def exported(port: int, pattern: str) -> str | None:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.search(pattern, text, flags=re.M)
    return found.group(1) if found else None


def test_a_gauge_set_by_a_process_that_ended_is_still_exported(ray_session):
    import ray

    address = ray.get_runtime_context().gcs_address
    code = textwrap.dedent(SET_AND_EXIT.format(address=address))
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy(), timeout=120)
    port = ray._private.worker.global_worker.node.metrics_export_port
    pattern = r'^ray_rayfolio_test_held_level\{[^}]*feature="ret_1"[^}]*\} (\S+)$'
    deadline = time.monotonic() + 60
    while exported(port, pattern) is None:  # exported every few seconds
        assert time.monotonic() < deadline, "the held gauge never reached the export"
        time.sleep(2)
    time.sleep(35)  # a value recorded once would have left the export by now (15-25 s)
    assert exported(port, pattern) == "2.0"
