"""Open-loop overload: 4x the measured request rate for 30 s against two ingress
replicas, with the tiny served market of the tests (bench/tiny_market.py).

Measures the capacity first (6 closed-loop clients, 8 s), then offers 4x that rate on
schedule (a new connection per request, whether or not earlier ones were answered) and
prints: the answers by status, how fast the shed ones (503/429) and the served ones
were answered, whether each shed answer carried Retry-After, and how long after the
overload a request succeeded again. Targets (issue 7): shed quickly, no other 5xx,
full service within 5 s. The same scenario as tests/reliability/test_serve_faults.py, which
asserts the behaviour; this prints the times.

    python -m bench.serve_overload [--factor 4] [--duration 30] [--max-in-flight 8] [--headroom N] [--max-queued N]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--max-in-flight", type=int, default=8, help="max_in_flight per ingress replica")
    parser.add_argument("--headroom", type=int, help="serve_headroom (default: the settings')")
    parser.add_argument("--max-queued", type=int, help="serve_max_queued (default: the settings')")
    args = parser.parse_args()

    import ray
    from ray import serve

    from bench.load import ms, open_loop, recovery_probe, steady_load
    from bench.tiny_market import USER, serve_tiny, tiny_settings
    from rayfolio.data.store import FeatureStore
    from rayfolio.serving.settings import Autoscaling

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    backstop = {"serve_headroom": args.headroom, "serve_max_queued": args.max_queued}
    backstop = {k: v for k, v in backstop.items() if v is not None}
    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny_settings(Path(tmp), ingress=Autoscaling(min_replicas=2, max_replicas=2), rate_per_key=1e5,
                                 burst_per_key=100_000, max_in_flight=args.max_in_flight,
                                 **backstop)  # fmt: skip
        client = serve_tiny(settings)
        symbols = sorted(FeatureStore(settings.store).to_pandas()["symbol"].unique().tolist())
        url = str(client.base_url)
        capacity = sum(o.status == 200 for o in steady_load(url, USER, symbols, seconds=8, workers=6)) / 8
        offered = args.factor * capacity
        prober, recovery = recovery_probe(url, USER, time.monotonic() + args.duration, limit=60.0)
        outcomes = open_loop(url, USER, symbols, rate=offered, seconds=args.duration)
        prober.join()
        statuses = collections.Counter(o.status for o in outcomes)
        shed = [o for o in outcomes if o.status in (429, 503)]
        served = [o for o in outcomes if o.status == 200]
        other = sum(n for s, n in statuses.items() if s == 0 or (s >= 500 and s != 503))
        print(f"two ingress replicas, {args.max_in_flight} requests in each at once (capacity {settings.capacity}); "
              f"Serve: {settings.serve_max_ongoing} per replica, {settings.serve_max_queued} queued")  # fmt: skip
        print(f"capacity (6 closed-loop clients): {capacity:.1f} req/s")
        print(f"offered: {offered:.1f} req/s for {args.duration:.0f} s = {len(outcomes)} requests")
        print(f"answers: {dict(sorted(statuses.items()))}  (0 = no HTTP answer within 60 s)")
        print(f"shed (503/429): {len(shed)}, with Retry-After: {sum(o.retry_after is not None for o in shed)}, "
              f"JSON error model: {sum(o.error_code is not None for o in shed)}; "
              f"answered in p50 {ms(shed, 50)}, p99 {ms(shed, 99)}")  # fmt: skip
        print(
            f"served: {len(served)} ({len(served) / args.duration:.1f}/s), p50 {ms(served, 50)}, p99 {ms(served, 99)}"
        )
        print(f"other 5xx or no answer: {other}")
        print(f"first success after the overload: {recovery.get('at', float('nan')):.2f} s")
        client.close()
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
