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
from dataclasses import dataclass
from pathlib import Path


def running_ingress() -> int:
    """RUNNING ingress replicas, as Serve's controller sees them."""
    from ray import serve

    states = serve.status().applications["rayfolio"].deployments["Ingress"].replica_states
    return int(states.get("RUNNING", 0))


def ingress_pids() -> dict[str, int]:
    """actor id -> pid of the live ingress replicas."""
    import ray
    from ray.util.state import list_actors

    # This session's cluster by address: other Ray instances on the machine make auto-detection refuse.
    address = ray.get_runtime_context().gcs_address
    actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.actor_id: a.pid for a in actors if a.class_name.endswith(":Ingress")}


@dataclass(frozen=True)
class ReplicaCrash:
    outcomes: list  # bench.load.Outcome per request of the steady load
    noticed_s: float  # after the kill, when Serve's controller saw fewer running replicas (nan: never)
    replaced_s: float  # after the kill, when all were running again (inf: not within the limit)
    new_replica: bool  # a replica that was not there before is alive


def kill_an_ingress_replica_under_load(
    base_url: str, key: str, symbols: list[str], *, seconds: float, kill_at: float, rate: float, limit: float
) -> ReplicaCrash:
    """The scenario the fault test asserts on and this benchmark times: steady load (``rate``
    requests per second, each retried once with its Idempotency-Key) for ``seconds``; at ``kill_at``
    one of the ingress replicas is SIGKILLed and Serve's view of the replicas watched for up to
    ``limit`` seconds."""
    from bench.load import steady_load

    before, event = ingress_pids(), {}

    def kill_and_watch() -> None:
        time.sleep(kill_at)
        os.kill(min(before.values()), signal.SIGKILL)
        event["killed"] = time.monotonic()
        while time.monotonic() - event["killed"] < limit:
            if running_ingress() < len(before):
                event.setdefault("noticed", time.monotonic())
            elif "noticed" in event:
                event["replaced"] = time.monotonic()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_and_watch)
    watcher.start()
    outcomes = steady_load(base_url, key, symbols, seconds=seconds, workers=4, rate=rate)
    watcher.join()
    return ReplicaCrash(
        outcomes,
        noticed_s=event.get("noticed", float("nan")) - event["killed"],
        replaced_s=event.get("replaced", float("inf")) - event["killed"],
        new_replica=bool(set(ingress_pids()) - set(before)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--kill-at", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench.load import ms
    from bench.tiny_market import USER, serve_tiny, tiny_settings
    from rayfolio.data.store import FeatureStore
    from rayfolio.serving.settings import Autoscaling

    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny_settings(Path(tmp), ingress=Autoscaling(min_replicas=2, max_replicas=2), rate_per_key=1e5,
                                 burst_per_key=100_000)  # fmt: skip
        client = serve_tiny(settings)
        symbols = sorted(FeatureStore(settings.store).to_pandas()["symbol"].unique().tolist())
        crash = kill_an_ingress_replica_under_load(str(client.base_url), USER, symbols, seconds=args.duration,
                                                   kill_at=args.kill_at, rate=args.rate, limit=300)  # fmt: skip
        ok = [o for o in crash.outcomes if o.status == 200]
        statuses = collections.Counter(o.status for o in crash.outcomes)
        print(f"replica crash: {len(crash.outcomes)} requests in {args.duration:.0f} s, {len(ok)} succeeded "
              f"({len(ok) / len(crash.outcomes):.4%}), {sum(o.attempts == 2 for o in crash.outcomes)} retried, "
              f"final statuses {dict(statuses)}; latency p50 {ms(ok, 50)}, p99 {ms(ok, 99)}")  # fmt: skip
        print(
            f"Serve saw the loss after {crash.noticed_s:.1f} s; a replacement was running after "
            f"{crash.replaced_s:.1f} s (target: within 15 s)"
        )
        client.close()
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
