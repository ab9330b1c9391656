"""Appenders racing on one audit log, on SQLite and on PostgreSQL (``audit_urls`` in conftest.py).

Ingress replicas on several nodes append to one hash chain; each of these processes stands for
one, with its own ``AuditLog`` on the same URL. The chain must come out linear (no fork, no gap),
a repeated Idempotency-Key recorded once, and a writer killed half way must leave nothing.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from rayfolio.serving.audit import GENESIS, HEAD, AuditLog

WORKERS, APPENDS = 4, 500
OPENERS = 8
SECRET = b"k"
BATCH_SIZES = (1, 1, 4, 1, 8, 2)  # single appends and append_many batches, cycled
DEADLINE_S = 90.0

pytestmark = pytest.mark.timeout(180)  # a lock never released would hang here, not for pytest's 10 minutes


def request_ids(worker: int) -> list[str]:
    """What ``worker`` sends, in order: every tenth request is a retry of an Idempotency-Key that
    every other worker also sends at the same point, the rest are its own."""
    return [f"shared-{i // 10}" if i % 10 == 0 else f"w{worker}-{i}" for i in range(APPENDS)]


def batches(worker: int) -> list[list[str]]:
    ids, out = request_ids(worker), []
    for size in itertools.cycle(BATCH_SIZES):
        if not ids:
            return out
        out.append(ids[:size])
        ids = ids[size:]
    return out


def _append_all(url: str, worker: int, start, opened, out) -> None:
    """One replica: open the log at the same moment as the others (on an empty database, so they
    all create the tables at once), append its requests, report what each append returned."""
    start.wait(timeout=DEADLINE_S)
    log = AuditLog(url, secret=SECRET)
    opened.set()
    got = []
    for batch in batches(worker):
        entries = [(f"key-{worker}", rid, "recommendation", {"worker": worker, "rid": rid}) for rid in batch]
        if len(entries) == 1:
            key, rid, kind, payload = entries[0]
            records = [log.append(key=key, request_id=rid, kind=kind, payload=payload)]
        else:
            records = log.append_many(entries)
        got += [(rid, r.request_id, r.seq, r.hash) for rid, r in zip(batch, records, strict=True)]
    out.put((worker, got))


def test_concurrent_appenders_leave_one_unbroken_chain(audit_urls):
    url = audit_urls()
    context = multiprocessing.get_context("spawn")
    start, opened, out = context.Barrier(WORKERS), context.Event(), context.Queue()
    workers = [context.Process(target=_append_all, args=(url, w, start, opened, out)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    try:
        # A reader from the first open on (a read-only open: the tables exist by then).
        assert opened.wait(timeout=DEADLINE_S), "no worker opened the log"
        log = AuditLog(url, secret=SECRET)
        results, seen, deadline = {}, [], time.monotonic() + DEADLINE_S
        while len(results) < WORKERS:
            # Read while they write: every snapshot of the log is a whole, valid chain.
            check = log.verify()
            assert check.ok, check
            seen.append(check.records)
            try:
                worker, got = out.get(timeout=0.05)
                results[worker] = got
            except queue.Empty:
                failed = [p.exitcode for p in workers if p.exitcode not in (None, 0)]
                assert not failed and time.monotonic() < deadline, f"workers failed or hung: {failed}"
        for p in workers:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in workers:
            if p.is_alive():
                p.kill()
    sent = {rid for w in range(WORKERS) for rid in request_ids(w)}
    assert any(0 < n < len(sent) for n in seen), seen  # some reads did meet appends in progress
    records = log.records(limit=10 * len(sent))
    check = log.verify()
    assert check.ok and check.records == len(records) == len(sent) == WORKERS * APPENDS - (WORKERS - 1) * 50
    assert [r.seq for r in records] == list(range(1, len(sent) + 1))  # no gap
    assert [r.prev_hash for r in records] == [GENESIS] + [r.hash for r in records[:-1]]  # no fork
    assert Counter(r.request_id for r in records) == Counter(sent)  # each request exactly once
    by_id = {r.request_id: r for r in records}
    for got in results.values():
        assert len(got) == APPENDS
        for rid, returned_id, seq, digest in got:
            # A retry got the first record back, in every process that sent the key.
            assert returned_id == rid and (seq, digest) == (by_id[rid].seq, by_id[rid].hash)
    shared = [r for r in records if r.request_id.startswith("shared-")]
    assert len(shared) == 50 and all(r.payload["rid"] == r.request_id for r in shared)
    writers = [r.key_id for r in records]
    # The appends overlapped (a run one process after another switches writers only WORKERS - 1 times),
    # or this proved nothing. SQLite's busy wait is unfair, so it runs in streaks: a few dozen switches
    # here, where PostgreSQL's queue on the row lock switches hundreds of times.
    assert sum(a != b for a, b in itertools.pairwise(writers)) >= WORKERS


def _open_together(url: str, start: threading.Barrier) -> AuditLog:
    start.wait(timeout=DEADLINE_S)
    return AuditLog(url, secret=SECRET)


def test_openers_of_a_new_database_at_once_make_one_log(audit_urls):
    """Replicas starting together on a new database: one set of tables, one head row, no error.
    Threads, each with its own AuditLog (its own connections), meet closer in time than processes."""
    for _ in range(3):
        url = audit_urls()
        start = threading.Barrier(OPENERS)
        with ThreadPoolExecutor(OPENERS) as pool:
            opening = [pool.submit(_open_together, url, start) for _ in range(OPENERS)]
            logs = [f.result() for f in opening]  # re-raises any opener's error
        for i, log in enumerate(logs):
            log.append(key="k", request_id=f"r{i}", kind="recommendation", payload={})
        with logs[0].engine.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(HEAD)).scalar() == 1
        assert logs[-1].verify().ok and logs[-1].verify().records == OPENERS
        for log in logs:
            log.engine.dispose()


def _die_before_commit(url: str, ready) -> None:
    """A writer that has inserted its records and moved the head, and stops just before COMMIT."""
    log = AuditLog(url, secret=SECRET)

    def stop_here(_connection) -> None:
        ready.set()
        time.sleep(DEADLINE_S)  # killed meanwhile

    sa.event.listen(log.engine, "commit", stop_here)
    log.append_many([("killed", f"half-{i}", "recommendation", {"i": i}) for i in range(3)])


def test_a_writer_killed_mid_transaction_leaves_no_partial_record(audit_urls):
    url = audit_urls()
    log = AuditLog(url, secret=SECRET)
    for i in range(3):
        log.append(key="k", request_id=f"r{i}", kind="recommendation", payload={"i": i})
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    writer = context.Process(target=_die_before_commit, args=(url, ready))
    writer.start()
    try:
        assert ready.wait(timeout=DEADLINE_S), "the writer never reached its commit"
        # Meanwhile readers see the log as it was: an uncommitted append is invisible.
        assert log.count() == 3 and log.verify().ok
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(timeout=30)
    assert writer.exitcode == -signal.SIGKILL
    check = log.verify()
    assert check.ok and check.records == 3 and log.get("half-0") is None
    # The dead writer's lock is gone (PostgreSQL: its connection closed; SQLite: the file lock with the
    # process) and the chain continues from the last committed record.
    after = log.append(key="k", request_id="after", kind="recommendation", payload={})
    assert after.seq == 4 and after.prev_hash == log.records()[2].hash
    assert log.verify().ok and log.verify().records == 4
