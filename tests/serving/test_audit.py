"""The hash-chained audit log: every kind of tampering is detected."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfolio.serving.audit import RECORDS, AuditLog, key_id, sqlite_url


def filled(tmp_path, n: int = 6, secret: bytes | None = b"k") -> AuditLog:
    log = AuditLog(sqlite_url(tmp_path / "audit.db"), secret=secret)
    for i in range(n):
        log.append(key=key_id(f"key-{i % 2}"), request_id=f"r{i}", kind="recommendation",
                   payload={"i": i, "weights": {"AAPL": 0.1 * i, "CASH": 1 - 0.1 * i}})  # fmt: skip
    return log


def execute(log: AuditLog, statement) -> None:
    with log.engine.begin() as c:
        c.execute(statement)


def test_an_untouched_log_verifies(tmp_path):
    log = filled(tmp_path)
    assert log.verify().ok and log.verify().records == 6 and log.count() == 6
    assert [r.seq for r in log.records()] == [1, 2, 3, 4, 5, 6]
    assert log.records()[1].prev_hash == log.records()[0].hash
    assert log.get("r3").payload["i"] == 3
    assert [r.request_id for r in log.records(key=key_id("key-1"))] == ["r1", "r3", "r5"]
    # Reopened from the file, the chain continues.
    again = AuditLog(sqlite_url(tmp_path / "audit.db"), secret=b"k")
    again.append(key="x", request_id="r6", kind="recommendation", payload={})
    assert again.verify().ok and again.count() == 7


def test_an_edited_payload_is_detected(tmp_path):
    log = filled(tmp_path)
    execute(log, RECORDS.update().where(RECORDS.c.seq == 3).values(payload='{"i":3,"weights":{"AAPL":0.9}}'))
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 3 and "changed after it was written" in check.reason


def test_an_edit_rehashed_without_the_key_is_detected(tmp_path):
    import hashlib

    log = filled(tmp_path)
    row = log.records()[2]
    payload = '{"i":3}'
    forged = hashlib.sha256("\x1f".join([str(row.seq), row.created_at, row.key_id, row.request_id, row.kind,
                                         payload, row.prev_hash]).encode()).hexdigest()  # fmt: skip
    execute(log, RECORDS.update().where(RECORDS.c.seq == 3).values(payload=payload, hash=forged))
    assert log.verify().first_bad_seq == 3


def test_a_deleted_record_is_detected(tmp_path):
    log = filled(tmp_path)
    execute(log, RECORDS.delete().where(RECORDS.c.seq == 4))
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 4 and "missing" in check.reason


def test_reordered_records_are_detected(tmp_path):
    log = filled(tmp_path)
    fields = ("created_at", "key_id", "request_id", "kind", "payload", "prev_hash", "hash")
    with log.engine.connect() as c:
        rows = {r.seq: r for r in c.execute(sa.select(RECORDS).where(RECORDS.c.seq.in_([2, 5])))}
    with log.engine.begin() as c:  # records 2 and 5 change places, each with its own hashes
        c.execute(RECORDS.update().where(RECORDS.c.seq == 2).values(request_id="moving"))
        for target, source in ((5, 2), (2, 5)):
            values = {f: getattr(rows[source], f) for f in fields}
            c.execute(RECORDS.update().where(RECORDS.c.seq == target).values(**values))
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 2


def test_a_truncated_tail_is_detected(tmp_path):
    log = filled(tmp_path)
    execute(log, RECORDS.delete().where(RECORDS.c.seq >= 5))
    check = log.verify()
    assert not check.ok and check.records == 4 and "head says 6" in check.reason


def test_an_appended_forgery_is_detected(tmp_path):
    log = filled(tmp_path)
    last = log.records()[-1]
    forged = {"seq": 7, "created_at": last.created_at, "key_id": "x", "request_id": "forged",
              "kind": "recommendation", "payload": "{}", "prev_hash": last.hash, "hash": "0" * 64}  # fmt: skip
    execute(log, RECORDS.insert().values(**forged))
    assert not log.verify().ok


def _append_many(path: str, worker: int) -> None:
    log = AuditLog(path, secret=b"k")
    for i in range(25):
        log.append(key=f"w{worker}", request_id=f"w{worker}-{i}", kind="recommendation", payload={"i": i})


def test_concurrent_appenders_in_several_processes_keep_one_chain(tmp_path):
    url = sqlite_url(tmp_path / "audit.db")
    AuditLog(url, secret=b"k")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(url, w)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    log = AuditLog(url, secret=b"k")
    check = log.verify()
    assert check.ok and check.records == 75


def test_a_batch_appends_in_order_in_one_chain(tmp_path):
    log = filled(tmp_path, n=2)
    batch = log.append_many([(key_id("key-0"), f"b{i}", "recommendation", {"i": i}) for i in range(5)])
    assert [r.seq for r in batch] == [3, 4, 5, 6, 7] and batch[0].prev_hash == log.records()[1].hash
    assert log.append_many([]) == [] and log.verify().ok and log.verify().records == 7
    log.append(key="x", request_id="after", kind="recommendation", payload={})
    assert log.verify().ok and log.records(offset=7)[0].prev_hash == batch[-1].hash
    # One bad record (no key) refuses the whole batch: nothing of it is written, the head stays.
    with pytest.raises(TypeError):
        log.append_many([("x", "new", "recommendation", {}), (None, "b9", "recommendation", {})])
    assert log.count() == 8 and log.get("new") is None and log.verify().ok


def test_a_known_request_id_is_not_written_twice(tmp_path):
    """Retries: an id already recorded (or earlier in the batch) gets the recorded record back."""
    log = filled(tmp_path, n=1)
    first = log.get("r0")
    again = log.append(key="x", request_id="r0", kind="recommendation", payload={"other": 1})
    assert again == first and log.count() == 1
    out = log.append_many([("x", "n1", "recommendation", {"a": 1}), ("x", "r0", "recommendation", {}),
                           ("y", "n1", "recommendation", {"a": 2})])  # fmt: skip
    assert [r.seq for r in out] == [2, 1, 2] and out[2].payload == {"a": 1}
    assert log.count() == 2 and log.verify().ok and log.verify().records == 2


FIELDS = ("created_at", "key_id", "request_id", "kind", "payload", "prev_hash", "hash")


@st.composite
def tamperings(draw):
    """One random tampering of a 6-record log: (kind, details)."""
    kind = draw(st.sampled_from(["edit", "delete", "swap", "truncate", "edit+rehash-tail"]))
    if kind in ("edit", "edit+rehash-tail"):
        return kind, (draw(st.integers(1, 6)), draw(st.sampled_from(FIELDS)), draw(st.text(min_size=1, max_size=20)))
    if kind == "delete":
        return kind, draw(st.lists(st.integers(1, 6), min_size=1, max_size=5, unique=True))
    if kind == "swap":
        i, j = draw(st.lists(st.integers(1, 6), min_size=2, max_size=2, unique=True))
        return kind, (i, j)
    return kind, draw(st.integers(1, 5))  # keep the first n records


@settings(max_examples=60, deadline=None)
@given(tamperings())
def test_random_tampering_is_always_detected(tampering):
    import tempfile
    from pathlib import Path

    kind, details = tampering
    with tempfile.TemporaryDirectory() as tmp:
        log = filled(Path(tmp))
        with log.engine.connect() as c:
            rows = {r.seq: r for r in c.execute(sa.select(RECORDS))}
        with log.engine.begin() as c:
            if kind.startswith("edit"):
                seq, field, text = details
                value = text if text != getattr(rows[seq], field) else text + "x"
                c.execute(RECORDS.update().where(RECORDS.c.seq == seq).values(**{field: value}))
                if kind == "edit+rehash-tail":  # also rewrite every later hash without the key: still caught
                    for later in range(seq + 1, 7):
                        c.execute(RECORDS.update().where(RECORDS.c.seq == later).values(hash="f" * 64))
            elif kind == "delete":
                c.execute(RECORDS.delete().where(RECORDS.c.seq.in_(details)))
            elif kind == "swap":  # two records change places, each keeping its own hashes
                i, j = details
                c.execute(RECORDS.update().where(RECORDS.c.seq == i).values(request_id="in-transit"))  # unique ids
                for target, source in ((j, i), (i, j)):
                    values = {f: getattr(rows[source], f) for f in FIELDS}
                    c.execute(RECORDS.update().where(RECORDS.c.seq == target).values(**values))
            else:
                c.execute(RECORDS.delete().where(RECORDS.c.seq > details))
        check = log.verify()
        assert not check.ok, (kind, details)
        log.engine.dispose()
