"""Closed-loop HTTP load on the recommendation service against a trivial Serve
ingress with the same Serve settings, in the same run.

Uses the models and feature store of `make run` (runs/quickstart). The load
generator is a separate process: wrk (Debian package `wrk`, a Lua script for the
body and key) when it is installed, else asyncio + httpx (one connection per
client; it costs more CPU than wrk on the same 2 cores, so its figures are lower).
Either way each connection sends its next request when the previous one answers.

Requests rotate over 32 API keys and 256 client ids. Prints req/s, p50/p95/p99 latency, errors and
the CPU each process spent per request, for POST /v1/recommendations and two trivial floors at 16
and 64 connections (one answers without reading the request, one reads its JSON body as every
real POST route must), their ratios, and POST /v1/explanations latency at 4 connections, precomputed (the
date's explanation stored, explain/store.py) and computed per request (``explain_precomputed: false``).

    python -m bench.serve_load [--duration 30] [--placement ingress|deployments] [--haproxy]
                               [--throughput-optimized] [--ingress-replicas 2] [--serve-env NAME=VALUE ...]
                               [--scenarios recommendations explanations]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# Many client keys, as an app's users would be (each key has its own rate limiter and audit key id);
# every request names one of them and one of CLIENTS client ids (X-Client-Id).
KEYS = tuple(f"bench-key-{i:04d}-0123456789abcdef" for i in range(32))
CLIENTS = 256
BODY = {"portfolio": {"AAPL": 0.1, "MSFT": 0.1}, "risk_profile": {"risk_tolerance": 0.5, "horizon_days": 20}}


def _client(url: str, body: dict, connections: int, duration: float, out) -> None:
    import httpx

    async def run() -> tuple[list[float], int]:
        latencies, errors = [], 0
        deadline = time.perf_counter() + duration
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

            async def worker(w: int) -> None:
                nonlocal errors
                n = 0
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    n += 1
                    headers = {"Authorization": f"Bearer {KEYS[(w + n) % len(KEYS)]}",
                               "X-Client-Id": f"client-{(w * 7919 + n) % CLIENTS}"}  # fmt: skip
                    try:
                        r = await client.post(url, json=body, headers=headers)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

            await asyncio.gather(*(worker(w) for w in range(connections)))
        return latencies, errors

    latencies, errors = asyncio.run(run())
    out.send((latencies, errors))


WRK_SCRIPT = """
local keys = {KEYS}
local n = 0
request = function()
  n = n + 1
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[n % #keys + 1],
                   ["X-Client-Id"] = "client-" .. (n * 7919) % CLIENTS}
  return wrk.format("POST", nil, headers, BODY)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.duration))
end
"""


def load_wrk(url: str, body: dict, connections: int, duration: float) -> dict:
    """wrk, one thread (the other core serves), latencies in microseconds from its histogram."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.replace("BODY", json.dumps(json.dumps(body))).replace("CLIENTS", str(CLIENTS))
                     .replace("KEYS", ", ".join(json.dumps(k) for k in KEYS)))  # fmt: skip
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--timeout", "30s",
                              "-s", script.name, url], capture_output=True, text=True, check=True).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, failed, bad_status, p50, p95, p99, micros = map(int, line.split()[1:])
    return {"req_per_s": requests / (micros / 1e6), "p50_ms": p50 / 1e3, "p95_ms": p95 / 1e3, "p99_ms": p99 / 1e3,
            "errors": failed + bad_status, "requests": requests}  # fmt: skip


def load(url: str, body: dict, connections: int, duration: float) -> dict:
    """Drive ``url`` from another process; figures of the run."""
    if shutil.which("wrk"):
        return load_wrk(url, body, connections, duration)
    import numpy as np

    receive, send = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_client, args=(url, body, connections, duration, send)
    )
    process.start()
    latencies, errors = receive.recv()
    process.join()
    ms = np.array(latencies) * 1000
    return {
        "req_per_s": len(ms) / duration,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
        "requests": len(ms),
    }


def cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) so far of every process on this machine, by its name (Ray actors by
    their ``ray::Class`` title, a replica by its deployment): where a load run's CPU went."""
    import psutil

    totals: dict[str, float] = {}
    for process in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times, cmdline = process.info["cpu_times"], process.info["cmdline"] or [process.info["name"] or "?"]
        if times is None:
            continue
        title = cmdline[0].split()[0] if cmdline and cmdline[0] else "?"
        # A worker's title carries the method it runs now (ray::ServeReplica:app:Deployment.method).
        name = title.split(".")[0] if title.startswith("ray::") else os.path.basename(title)
        totals[name] = totals.get(name, 0.0) + times.user + times.system
    return totals


def measured(url: str, body: dict, connections: int, duration: float) -> dict:
    """``load`` and the CPU milliseconds per request each process spent meanwhile (the top five)."""
    before = cpu_by_process()
    result = load(url, body, connections, duration)
    after = cpu_by_process()
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    top = sorted(spent.items(), key=lambda kv: -kv[1])[:5]
    result["cpu_ms_per_request"] = {name: round(1e3 * s / max(result["requests"], 1), 2) for name, s in top}
    return result


def settle(apps: tuple[str, ...], timeout_s: float = 120.0) -> None:
    """Wait until every deployment of ``apps`` runs all the replicas its autoscaler wants."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status()
        states = [d.status for a in apps for d in status.applications[a].deployments.values()]
        if all(getattr(s, "value", s) == "HEALTHY" for s in states):
            return
        time.sleep(1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where `make run` wrote runs/")
    parser.add_argument(
        "--placement",
        choices=("ingress", "deployments"),
        default="ingress",
        help="where the policy and the risk filters run (ServeSettings.placement)",
    )
    parser.add_argument("--haproxy", action="store_true", help="RAY_SERVE_ENABLE_HA_PROXY=1 (binds all interfaces)")
    parser.add_argument("--throughput-optimized", action="store_true",
                        help="RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (gRPC between replicas)")  # fmt: skip
    parser.add_argument(
        "--serve-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="Ray Serve settings read from the environment, e.g. RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0",
    )
    parser.add_argument("--ingress-replicas", type=int, default=2,
                        help="Ingress replicas, fixed (the default serve config's max_replicas): what is measured is "
                        "the steady state, not an autoscaler's replica starting mid-run")  # fmt: skip
    parser.add_argument("--scenarios", nargs="+", choices=("recommendations", "explanations"),
                        default=["recommendations", "explanations"])  # fmt: skip
    args = parser.parse_args()
    store, registry = args.runs / "quickstart" / "features", args.runs / "registry"
    if not (store / "manifest.json").is_file() or not registry.is_dir():
        raise SystemExit(f"no trained models under {args.runs}: run `make run` first")
    if args.haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    if args.throughput_optimized:
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    os.environ["RAYFOLIO_API_KEYS"] = ",".join(KEYS)
    os.environ.update(
        dict(item.split("=", 1) for item in args.serve_env)
    )  # before Ray starts: every process reads them

    import ray
    from fastapi import FastAPI
    from ray import serve

    from rayfolio.cluster.config import RunConfig
    from rayfolio.serving.audit import sqlite_url
    from rayfolio.serving.builder import build_app
    from rayfolio.serving.settings import Autoscaling, ServeSettings

    ray.init(logging_level="ERROR", include_dashboard=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    audit = Path(os.environ.get("TMPDIR", "/tmp")) / f"rayfolio-bench-audit-{os.getpid()}.db"
    from rayfolio.rl.load import best_allocator
    from rayfolio.training.registry import ModelRegistry

    settings = ServeSettings(store=store.resolve(), registry=registry.resolve(), splits=RunConfig().splits,
                             audit_url=sqlite_url(audit), burst_per_key=10**9, rate_per_key=10**9,
                             allocator=best_allocator(ModelRegistry(registry)), placement=args.placement,
                             ingress=Autoscaling(min_replicas=args.ingress_replicas,
                                                 max_replicas=args.ingress_replicas))  # fmt: skip
    serve.run(build_app(settings), name="rayfolio", route_prefix="/")

    trivial = FastAPI()

    # Two floors: "/" answers without reading the request; "/body" reads and parses the JSON body, which
    # behind Serve's Python proxy costs the replica one more actor call back into the proxy (the body
    # is pulled, not pushed: ray/serve/_private/proxy.py receive_asgi_messages).
    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(trivial)
    class Trivial:
        @trivial.post("/")
        async def echo(self) -> dict:
            return {"ok": True}

        @trivial.post("/body")
        async def echo_body(self, payload: dict) -> dict:
            return {"ok": True, "fields": len(payload)}

    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")
    base = f"http://127.0.0.1:{port}"
    settle(("rayfolio", "trivial"))
    load(f"{base}/v1/recommendations", BODY, 16, 5.0)  # warm-up: models, caches, connections
    results = {}
    for connections in (16, 64) if "recommendations" in args.scenarios else ():
        results[f"recommendations@{connections}"] = measured(f"{base}/v1/recommendations", BODY, connections,
                                                             args.duration)  # fmt: skip
        results[f"trivial@{connections}"] = measured(f"{base}/trivial/", {}, connections, args.duration)
        results[f"trivial+body@{connections}"] = measured(f"{base}/trivial/body", BODY, connections, args.duration)
    if "explanations" in args.scenarios:
        import httpx

        # The first request for the date computes its explanation and stores it (or finds it stored by
        # `rayfolio explanations refresh`); then every replica reads it.
        first = httpx.post(f"{base}/v1/explanations", json=BODY, headers={"Authorization": f"Bearer {KEYS[0]}"},
                           timeout=300)  # fmt: skip
        first.raise_for_status()
        results["explanations@4 precomputed"] = measured(f"{base}/v1/explanations", BODY, 4, args.duration)
        serve.run(build_app(settings.model_copy(update={"explain_precomputed": False})), name="rayfolio",
                  route_prefix="/")  # fmt: skip
        settle(("rayfolio",))
        results["explanations@4 per request"] = measured(f"{base}/v1/explanations", BODY, 4, args.duration)
    proxy = f"placement {args.placement}, " + ("HAProxy" if args.haproxy else "default proxy")
    proxy += ", throughput-optimized" * args.throughput_optimized + "".join(f", {e}" for e in args.serve_env)
    generator = "wrk" if shutil.which("wrk") else "httpx"
    print(f"\nServe ({proxy}), {args.duration:.0f} s per run, {generator} in a separate process, 2 cores shared:")
    print(f"{'endpoint@connections':28s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    for name, r in results.items():
        print(f"{name:28s} {r['req_per_s']:8.1f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['errors']:7d}")  # fmt: skip
    for connections in (16, 64) if "recommendations" in args.scenarios else ():
        ours = results[f"recommendations@{connections}"]
        for floor in ("trivial", "trivial+body"):
            ref = results[f"{floor}@{connections}"]
            print(f"recommendations / {floor} at {connections} connections: throughput "
                  f"{ours['req_per_s'] / ref['req_per_s']:.2f}x (target >= 0.6x), p99 "
                  f"{ours['p99_ms'] / ref['p99_ms']:.2f}x (target <= 2x)")  # fmt: skip
    print("targets: 0 errors\nCPU ms per request, by process:")
    for name, r in results.items():
        if "cpu_ms_per_request" in r:
            print(f"  {name:26s} " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_ms_per_request"].items()))
    print(json.dumps(results))
    serve.shutdown()
    ray.shutdown()
    audit.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
