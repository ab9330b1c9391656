"""The hash-chained audit log: every kind of tampering is detected, on SQLite and on PostgreSQL
(``audit_urls`` in conftest.py: each test runs once per backend, on new databases)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from rayfolio.serving.audit import RECORDS, AuditLog, key_id


def filled(url: str, n: int = 6, secret: bytes | None = b"k") -> AuditLog:
    log = AuditLog(url, secret=secret)
    for i in range(n):
        log.append(key=key_id(f"key-{i % 2}"), request_id=f"r{i}", kind="recommendation",
                   payload={"i": i, "weights": {"AAPL": 0.1 * i, "CASH": 1 - 0.1 * i}})  # fmt: skip
    return log


def execute(log: AuditLog, statement) -> None:
    with log.engine.begin() as c:
        c.execute(statement)


def test_an_untouched_log_verifies(audit_urls):
    url = audit_urls()
    log = filled(url)
    assert log.verify().ok and log.verify().records == 6 and log.count() == 6
    assert [r.seq for r in log.records()] == [1, 2, 3, 4, 5, 6]
    assert log.records()[1].prev_hash == log.records()[0].hash
    assert log.get("r3").payload["i"] == 3
    assert [r.request_id for r in log.records(key=key_id("key-1"))] == ["r1", "r3", "r5"]
    # Reopened, the chain continues.
    again = AuditLog(url, secret=b"k")
    again.append(key="x", request_id="r6", kind="recommendation", payload={})
    assert again.verify().ok and again.count() == 7


def test_an_edited_payload_is_detected(audit_urls):
    log = filled(audit_urls())
    execute(log, RECORDS.update().where(RECORDS.c.seq == 3).values(payload='{"i":3,"weights":{"AAPL":0.9}}'))
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 3 and "changed after it was written" in check.reason


def test_an_edit_rehashed_without_the_key_is_detected(audit_urls):
    import hashlib

    log = filled(audit_urls())
    row = log.records()[2]
    payload = '{"i":3}'
    forged = hashlib.sha256("\x1f".join([str(row.seq), row.created_at, row.key_id, row.request_id, row.kind,
                                         payload, row.prev_hash]).encode()).hexdigest()  # fmt: skip
    execute(log, RECORDS.update().where(RECORDS.c.seq == 3).values(payload=payload, hash=forged))
    assert log.verify().first_bad_seq == 3


def test_a_deleted_record_is_detected(audit_urls):
    log = filled(audit_urls())
    execute(log, RECORDS.delete().where(RECORDS.c.seq == 4))
    check = log.verify()
    assert not check.ok and check.first_bad_seq == 4 and "missing" in check.reason


def test_reordered_records_are_detected(audit_urls):
    log = filled(audit_urls())
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


def test_a_truncated_tail_is_detected(audit_urls):
    log = filled(audit_urls())
    execute(log, RECORDS.delete().where(RECORDS.c.seq >= 5))
    check = log.verify()
    assert not check.ok and check.records == 4 and "head says 6" in check.reason


def test_an_appended_forgery_is_detected(audit_urls):
    log = filled(audit_urls())
    last = log.records()[-1]
    forged = {"seq": 7, "created_at": last.created_at, "key_id": "x", "request_id": "forged",
              "kind": "recommendation", "payload": "{}", "prev_hash": last.hash, "hash": "0" * 64}  # fmt: skip
    execute(log, RECORDS.insert().values(**forged))
    assert not log.verify().ok


def test_a_batch_appends_in_order_in_one_chain(audit_urls):
    log = filled(audit_urls(), n=2)
    batch = log.append_many([(key_id("key-0"), f"b{i}", "recommendation", {"i": i}) for i in range(5)])
    assert [r.seq for r in batch] == [3, 4, 5, 6, 7] and batch[0].prev_hash == log.records()[1].hash
    assert log.append_many([]) == [] and log.verify().ok and log.verify().records == 7
    log.append(key="x", request_id="after", kind="recommendation", payload={})
    assert log.verify().ok and log.records(offset=7)[0].prev_hash == batch[-1].hash
    # One bad record (no key) refuses the whole batch: nothing of it is written, the head stays.
    with pytest.raises(TypeError):
        log.append_many([("x", "new", "recommendation", {}), (None, "b9", "recommendation", {})])
    assert log.count() == 8 and log.get("new") is None and log.verify().ok


def test_a_known_request_id_is_not_written_twice(audit_urls):
    """Retries: an id already recorded (or earlier in the batch) gets the recorded record back."""
    log = filled(audit_urls(), n=1)
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
        # No NUL: PostgreSQL's text cannot hold one, so no tampering there can write it.
        text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=20)
        return kind, (draw(st.integers(1, 6)), draw(st.sampled_from(FIELDS)), draw(text))
    if kind == "delete":
        return kind, draw(st.lists(st.integers(1, 6), min_size=1, max_size=5, unique=True))
    if kind == "swap":
        i, j = draw(st.lists(st.integers(1, 6), min_size=2, max_size=2, unique=True))
        return kind, (i, j)
    return kind, draw(st.integers(1, 5))  # keep the first n records


def test_random_tampering_is_always_detected(audit_urls):
    url = audit_urls()  # one database, emptied after each example (cheaper than a new one per example)

    @settings(max_examples=60, deadline=None)
    @given(tamperings())
    def tamper(tampering):
        kind, details = tampering
        log = filled(url)
        try:
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
        finally:
            RECORDS.metadata.drop_all(log.engine)
            log.engine.dispose()

    tamper()


def test_a_bare_postgresql_url_uses_the_shipped_driver(audit_urls):
    url = audit_urls()
    bare = url.replace("postgresql+psycopg://", "postgresql://")
    log = filled(bare)
    assert log.verify().ok and log.count() == 6 and AuditLog(url, secret=b"k").verify().ok
