"""Load generators for the serving benchmarks and the fault tests (tests import them from
here; bench/ never imports tests/): a steady closed-loop client that retries once with an
idempotency key (what a careful app does), an open-loop client that offers a fixed request
rate whatever the service answers, and a crowd of clients that never back off."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Outcome:
    started: float  # monotonic seconds
    seconds: float  # until the final answer (both attempts)
    status: int  # of the final attempt; 0: no HTTP answer (connection error)
    attempts: int
    request_id: str | None
    retry_after: str | None = None
    error_code: str | None = None  # of a JSON error body ({"error": {"code": ...}}); None: not one


def body_for(rng: random.Random, symbols: list[str]) -> dict:
    held = rng.sample(symbols, 2)
    profile = {"risk_tolerance": round(rng.random(), 2), "horizon_days": rng.choice([5, 20, 60])}
    return {"portfolio": {held[0]: round(rng.uniform(0, 0.4), 3), held[1]: round(rng.uniform(0, 0.4), 3)},
            "risk_profile": profile}  # fmt: skip


def steady_load(
    base_url: str,
    key: str | list[str],
    symbols: list[str],
    seconds: float,
    workers: int,
    rate: float | None = None,
    retry: bool = True,
) -> list[Outcome]:
    """``workers`` clients posting recommendations for ``seconds``, back to back or together at
    most ``rate`` per second; ``key``: one for all, or one per client. With ``retry`` a 5xx or a
    connection error is retried once, after 0.25 s, with the same Idempotency-Key."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        # Ray runs its workers at niceness 15; a client at 0 on the same two cores would starve
        # the service it measures (a replacement replica most of all). Linux: per thread.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
        rng, gap = random.Random(seed), 0.0 if rate is None else workers / rate
        own = key[seed] if isinstance(key, list) else key
        with httpx.Client(base_url=base_url, timeout=30) as http:
            while time.monotonic() < deadline:
                body, started = body_for(rng, symbols), time.monotonic()
                headers = {"Authorization": f"Bearer {own}", "Idempotency-Key": uuid.uuid4().hex}
                status, request_id, attempts = 0, None, 0
                for attempts in (1, 2) if retry else (1,):
                    try:
                        r = http.post("/v1/recommendations", json=body, headers=headers)
                        status = r.status_code
                        request_id = r.json().get("request_id") if status == 200 else None
                    except (httpx.TransportError, ValueError):
                        status = 0
                    if 0 < status < 500:
                        break
                    if attempts == 1:
                        time.sleep(0.25)
                outcomes.append(Outcome(started, time.monotonic() - started, status, attempts, request_id))
                time.sleep(max(0.0, started + gap - time.monotonic()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes, key=lambda o: o.started)


def _raw_request(url: httpx.URL, key: str, body: dict) -> bytes:
    content = json.dumps(body).encode()
    head = (f"POST /v1/recommendations HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + content


def _dechunk(body: bytes) -> bytes:
    """A chunked transfer-encoded body's content."""
    out, rest = b"", body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, rest = out + rest[:n], rest[n + 2 :]
    return out


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


async def _send(url: httpx.URL, payload: bytes) -> Outcome:
    """One request on a new connection; the status, Retry-After and error code of its answer."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(url.host, url.port), 60)
        writer.write(payload)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        body = await asyncio.wait_for(reader.read(), 60) if status != 200 else b""  # Connection: close
        writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return Outcome(started, time.monotonic() - started, 0, 1, None)
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Outcome(started, time.monotonic() - started, status, 1, None, headers.get("retry-after"),
                   _error_code(body))  # fmt: skip


# Plain asyncio streams, not an HTTP library: the crowd must cost the shared CPU far less than the service.


def open_loop(base_url: str, key: str, symbols: list[str], rate: float, seconds: float) -> list[Outcome]:
    """``rate`` requests per second for ``seconds``, each sent on schedule on a new connection
    whether or not the earlier ones have been answered (no retries)."""
    url, rng = httpx.URL(base_url), random.Random(0)
    payloads = [_raw_request(url, key, body_for(rng, symbols)) for _ in range(64)]

    async def run() -> list[Outcome]:
        tasks, begin = [], time.monotonic()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(url, payloads[i % len(payloads)])))
        return list(await asyncio.gather(*tasks))

    return asyncio.run(run())


def crowd(base_url: str, key: str, symbols: list[str], clients: int, seconds: float) -> list[Outcome]:
    """``clients`` connections at once for ``seconds``, each sending its next request as soon as
    the last is answered, whatever the answer (no retries, no backing off)."""
    url, rng = httpx.URL(base_url), random.Random(1)
    payloads = [_raw_request(url, key, body_for(rng, symbols)) for _ in range(64)]
    outcomes: list[Outcome] = []

    async def client(i: int) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            outcomes.append(await _send(url, payloads[(i + len(outcomes)) % len(payloads)]))

    async def run() -> None:
        await asyncio.gather(*(client(i) for i in range(clients)))

    asyncio.run(run())
    return sorted(outcomes, key=lambda o: o.started)


def recovery_probe(base_url: str, key: str, end: float, limit: float = 30.0) -> tuple[threading.Thread, dict]:
    """A started thread that, from ``end`` (monotonic seconds) on, sends a recommendation every
    0.1 s until one succeeds; ``result["at"]``: how long after ``end`` (absent: none in ``limit`` s)."""
    result: dict[str, float] = {}

    def probe() -> None:
        time.sleep(max(0.0, end - time.monotonic()))
        with httpx.Client(base_url=base_url, timeout=10) as http:
            while time.monotonic() - end < limit:
                try:
                    if http.post("/v1/recommendations", json={}, headers={"Authorization": f"Bearer {key}"}
                                 ).status_code == 200:  # fmt: skip
                        result["at"] = time.monotonic() - end
                        return
                except httpx.HTTPError:  # not yet
                    pass
                time.sleep(0.1)

    thread = threading.Thread(target=probe)
    thread.start()
    return thread, result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def ms(outcomes: list[Outcome], q: float) -> str:
    """The q-th percentile of the outcomes' times, in milliseconds."""
    return f"{percentile([o.seconds for o in outcomes], q) * 1e3:.0f} ms"
