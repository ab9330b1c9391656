"""The append-only, hash-chained audit log of every recommendation.

Each record's hash covers its own fields and the previous record's hash, so
editing, deleting, reordering or inserting any record breaks the chain from
that point on; a one-row chain head (last sequence number and hash) catches a
truncated tail. With ``RAYFOLIO_AUDIT_KEY`` set the hashes are HMAC-SHA256
under that key, so someone who can write to the database but does not hold
the key cannot rebuild a consistent chain after an edit.

Storage is any SQLAlchemy URL; the embedded default is a SQLite file. Appends
take the database's write lock (the chain head row), so replicas in several
processes append one at a time and the chain stays linear.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

GENESIS = "0" * 64

_metadata = sa.MetaData()
RECORDS = sa.Table(
    "audit_records",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False, index=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
HEAD = sa.Table(
    "audit_head",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    created_at: str
    key_id: str
    request_id: str
    kind: str
    payload: dict
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str = ""


def canonical(payload: dict) -> str:
    """One JSON text per payload: sorted keys, no spaces, no NaN."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def key_id(api_key: str) -> str:
    """Who made a request, without storing the key: a short sha256 of it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def sqlite_url(path: str | os.PathLike) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class AuditLog:
    def __init__(self, url: str, *, secret: bytes | None = None) -> None:
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, connect_args=connect_args)
        if url.startswith("sqlite"):
            # WAL: readers never block the appender, and a commit is one sequential write;
            # synchronous=NORMAL keeps every commit across a crash of the process (not of the OS).
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.secret = secret if secret is not None else os.environ.get("RAYFOLIO_AUDIT_KEY", "").encode() or None
        _metadata.create_all(self.engine)
        with self.engine.begin() as c:
            if c.execute(sa.select(sa.func.count()).select_from(HEAD)).scalar() == 0:
                c.execute(HEAD.insert().values(id=1, seq=0, hash=GENESIS))

    def _digest(self, seq: int, created_at: str, key: str, request_id: str, kind: str, payload: str, prev: str) -> str:
        message = "\x1f".join([str(seq), created_at, key, request_id, kind, payload, prev]).encode()
        if self.secret:
            return hmac.new(self.secret, message, hashlib.sha256).hexdigest()
        return hashlib.sha256(message).hexdigest()

    def append(self, *, key: str, request_id: str, kind: str, payload: dict) -> AuditRecord:
        """Append one record; returns it once committed."""
        return self.append_many([(key, request_id, kind, payload)])[0]

    def append_many(self, entries: list[tuple[str, str, str, dict]]) -> list[AuditRecord]:
        """Append (key, request_id, kind, payload) records in order, in one transaction:
        all are committed when this returns, or none is (one write lock, one commit).

        Idempotent by ``request_id``: an entry whose request_id is already recorded (by
        any process, or earlier in ``entries``) is not written again; its place in the
        result holds the record that was (a client's retry gets the first answer back)."""
        texts = [canonical(payload) for _, _, _, payload in entries]
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        out: list[AuditRecord] = []
        with self.engine.begin() as c:
            # Taking the head row for update first serialises appenders (SQLite: the write lock),
            # so the check for earlier records below cannot race another appender.
            c.execute(HEAD.update().where(HEAD.c.id == 1).values(hash=HEAD.c.hash))
            last, prev = c.execute(sa.select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).one()
            wanted = [request_id for _, request_id, _, _ in entries]
            known = {row.request_id: self._record(row)
                     for row in c.execute(sa.select(RECORDS).where(RECORDS.c.request_id.in_(wanted)))}  # fmt: skip
            rows = []
            for (key, request_id, kind, payload), text in zip(entries, texts, strict=True):
                if request_id in known:
                    out.append(known[request_id])
                    continue
                last += 1
                digest = self._digest(last, created_at, key, request_id, kind, text, prev)
                rows.append({"seq": last, "created_at": created_at, "key_id": key, "request_id": request_id,
                             "kind": kind, "payload": text, "prev_hash": prev, "hash": digest})  # fmt: skip
                known[request_id] = AuditRecord(last, created_at, key, request_id, kind, payload, prev, digest)
                out.append(known[request_id])
                prev = digest
            if rows:
                c.execute(RECORDS.insert(), rows)
                c.execute(HEAD.update().where(HEAD.c.id == 1).values(seq=last, hash=prev))
        return out

    def records(self, *, key: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """Records in order; only ``key``'s when given."""
        query = sa.select(RECORDS).order_by(RECORDS.c.seq).limit(limit).offset(offset)
        if key is not None:
            query = query.where(RECORDS.c.key_id == key)
        with self.engine.connect() as c:
            return [self._record(row) for row in c.execute(query)]

    def get(self, request_id: str) -> AuditRecord | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(RECORDS).where(RECORDS.c.request_id == request_id)).first()
        return None if row is None else self._record(row)

    def count(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(RECORDS)).scalar())

    @staticmethod
    def _record(row) -> AuditRecord:
        return AuditRecord(row.seq, row.created_at, row.key_id, row.request_id, row.kind, json.loads(row.payload),
                           row.prev_hash, row.hash)  # fmt: skip

    def verify(self) -> ChainCheck:
        """Walk the whole chain; the first record that breaks it and why."""
        expected_seq, prev, count = 1, GENESIS, 0
        with self.engine.connect() as c:
            for row in c.execute(sa.select(RECORDS).order_by(RECORDS.c.seq)):
                if row.seq != expected_seq:
                    return ChainCheck(False, count, expected_seq, f"record {expected_seq} is missing")
                if row.prev_hash != prev:
                    return ChainCheck(False, count, row.seq, f"record {row.seq} does not follow record {row.seq - 1}")
                digest = self._digest(row.seq, row.created_at, row.key_id, row.request_id, row.kind, row.payload, prev)
                if not hmac.compare_digest(digest.encode(), row.hash.encode()):
                    return ChainCheck(False, count, row.seq, f"record {row.seq} was changed after it was written")
                prev, expected_seq, count = row.hash, expected_seq + 1, count + 1
            head_seq, head_hash = c.execute(sa.select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).one()
        if head_seq != count:
            return ChainCheck(False, count, count + 1, f"the log ends at record {count} but its head says {head_seq}")
        if not hmac.compare_digest(head_hash.encode(), prev.encode()):
            return ChainCheck(False, count, count, f"record {count} is not the one the head recorded")
        return ChainCheck(True, count)
