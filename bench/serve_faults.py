"""A killed ingress replica under steady load: the times the fault test
(tests/reliability/test_serve_faults.py) no longer asserts. Two ingress replicas of the tiny
served market (bench/tiny_market.py), 40 req/s for 60 s; one replica is SIGKILLed 15 s in.

Prints: requests and how many succeeded (one retry with the same Idempotency-Key), latency,
when Serve saw the loss and when a replacement replica was running (target: within 15 s).

    python -m bench.serve_faults [--duration 60] [--kill-at 15] [--rate 40]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import tempfile
import threading
import time
from pathlib import Path


def running_ingress() -> int:
    from ray import serve

    states = serve.status().applications["rayfolio"].deployments["Ingress"].replica_states
    return int(states.get("RUNNING", 0))


def ingress_pids() -> dict[str, int]:
    import ray
    from ray.util.state import list_actors

    # This session's cluster by address: other Ray instances on the machine make auto-detection refuse.
    address = ray.get_runtime_context().gcs_address
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.actor_id: a.pid for a in actors if a.class_name.endswith(":Ingress")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench.load import ms, steady_load
    from bench.tiny_market import USER, serve_tiny, tiny_settings
    from rayfolio.data.store import FeatureStore
    from rayfolio.serving.settings import Autoscaling

    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny_settings(Path(tmp), ingress=Autoscaling(min_replicas=2, max_replicas=2), rate_per_key=1e5,
                                 burst_per_key=100_000)  # fmt: skip
        client = serve_tiny(settings)
        symbols = sorted(FeatureStore(settings.store).to_pandas()["symbol"].unique().tolist())
        before, event = ingress_pids(), {}

        def kill_and_watch() -> None:
            time.sleep(args.kill_at)
            os.kill(min(before.values()), signal.SIGKILL)
            event["killed"] = time.monotonic()
            while time.monotonic() - event["killed"] < 300:
                running = running_ingress()
                if running < 2:
                    event.setdefault("noticed", time.monotonic())
                elif "noticed" in event:
                    event["replaced"] = time.monotonic()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=kill_and_watch)
        watcher.start()
        outcomes = steady_load(str(client.base_url), USER, symbols, seconds=args.duration, workers=4, rate=args.rate)
        watcher.join()
        ok = [o for o in outcomes if o.status == 200]
        statuses = collections.Counter(o.status for o in outcomes)
        print(f"replica crash: {len(outcomes)} requests in {args.duration:.0f} s, {len(ok)} succeeded "
              f"({len(ok) / len(outcomes):.4%}), {sum(o.attempts == 2 for o in outcomes)} retried, "
              f"final statuses {dict(statuses)}; latency p50 {ms(ok, 50)}, p99 {ms(ok, 99)}")  # fmt: skip
        noticed = event.get("noticed", float("nan")) - event["killed"]
        replaced = event.get("replaced", float("nan")) - event["killed"]
        print(
            f"Serve saw the loss after {noticed:.1f} s; a replacement was running after {replaced:.1f} s "
            "(target: within 15 s)"
        )
        client.close()
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
