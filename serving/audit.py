"""The append-only, hash-chained audit log of every recommendation.

Each record's hash covers its own fields and the previous record's hash, so
editing, deleting, reordering or inserting any record breaks the chain from
that point on; a one-row chain head (last sequence number and hash) catches a
truncated tail. With ``RAYFOLIO_AUDIT_KEY`` set the hashes are HMAC-SHA256
under that key, so someone who can write to the database but does not hold
the key cannot rebuild a consistent chain after an edit.

Storage is any SQLAlchemy URL; the embedded default is a SQLite file, and
PostgreSQL (``postgresql+psycopg://user:pass@host/db``) is the tested server
database for replicas on several nodes. Every append takes a lock on the chain
head row first (PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: ``BEGIN
IMMEDIATE``, the file's write lock), so appenders in any process on any node
append one at a time and the chain never forks. One append is one transaction:
a writer killed half way leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import sqlite3
import time
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


# The key of the advisory lock that serialises creating the tables (any constant; a lock per database).
_CREATE_LOCK = 0x7261796661


def _sqlite_connect(connection, _record) -> None:
    # pysqlite's legacy mode would BEGIN only before DML and run SELECT and CREATE outside any
    # transaction; with it off, SQLAlchemy's "begin" event below emits every BEGIN itself, so a
    # read (verify) is one snapshot and creating the tables is one transaction.
    connection.isolation_level = None
    cursor = connection.cursor()
    # WAL: readers never block the appender, and a commit is one sequential write;
    # synchronous=NORMAL keeps every commit across a crash of the process (not of the OS).
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as err:
            # A new file turns to WAL (for good) under an exclusive lock, and SQLite answers "locked" at
            # once, without its busy wait, while another connection opening it at the same moment reads
            # it: several processes opening a new log at once take turns here.
            if "locked" not in str(err) or attempt == 99:
                raise
            time.sleep(0.01 * (1 + attempt % 10))
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(connection) -> None:
    # A writer takes the file's write lock at BEGIN, before it reads the head: a deferred
    # transaction that read first could not upgrade to writing once another writer committed.
    connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("audit_write") else "BEGIN")


def driver_url(url: str) -> str:
    """A bare ``postgresql://`` URL names the driver rayfolio ships (psycopg 3), not SQLAlchemy's
    default (psycopg2, not installed)."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


class AuditLogUnreadable(ValueError):
    """An audit log that a reader cannot open: no such file, no audit table, or a bad URL (one line)."""


def audit_url(text: str) -> str:
    """A SQLAlchemy URL as given (``driver_url``), or a SQLite file's path as its URL."""
    return driver_url(text) if "://" in text else sqlite_url(text)


def shown_url(url: str) -> str:
    """The URL without its password, for messages and reports."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(an unreadable URL)"


def open_existing(text: str) -> AuditLog:
    """The audit log at ``text`` (a URL or a SQLite file) for readers: a missing file or a database
    without the audit table is an error, never a new, empty log (``AuditLog`` would create one)."""
    url = audit_url(text)
    shown = shown_url(url)
    try:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
            raise AuditLogUnreadable(f"audit log {shown}: no such file")
        engine = sa.create_engine(parsed)
        try:
            with engine.connect() as c:
                if not sa.inspect(c).has_table(RECORDS.name):
                    raise AuditLogUnreadable(f"audit log {shown}: not an audit log (no {RECORDS.name} table)")
        finally:
            engine.dispose()
        return AuditLog(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, sa.exc.DBAPIError, ImportError) as err:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        raise AuditLogUnreadable(f"audit log {shown}: cannot be read ({reason})") from None


class AuditLog:
    def __init__(self, url: str, *, secret: bytes | None = None) -> None:
        url = driver_url(url)
        sqlite = url.startswith("sqlite")
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if sqlite:
            self.engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
            # SQLite is serialisable: one write lock for the writer, one snapshot per read transaction.
            self._writer = self.engine.execution_options(audit_write=True)
            self._snapshot = self.engine
        else:
            # A server restarted or a connection dropped by a proxy: test each pooled one before use.
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            # READ COMMITTED (PostgreSQL's default, set here so a server default cannot change it):
            # append_many relies on each statement after the head lock seeing what the previous
            # holder committed; REPEATABLE READ would fail on the head row a concurrent append updated.
            self._writer = self.engine.execution_options(isolation_level="READ COMMITTED")
            # verify reads the records and then the head: both from one snapshot, or an append
            # committed in between would look like a broken chain.
            self._snapshot = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self.secret = secret if secret is not None else os.environ.get("RAYFOLIO_AUDIT_KEY", "").encode() or None
        self._create()

    def _create(self) -> None:
        """The tables and the head row, made once even when several processes open a new database
        at the same moment (replicas starting together): the second waits, then finds them."""
        with self.engine.connect() as c:
            if sa.inspect(c).has_table(HEAD.name) and c.execute(sa.select(sa.func.count()).select_from(HEAD)).scalar():
                return  # the usual case, and no write lock: a read-only user can open the log
        with self._writer.begin() as c:
            # Both databases create tables transactionally. PostgreSQL: a transaction-scoped advisory
            # lock makes the creators take turns (without it two would both find no table and one
            # CREATE would fail on the other's); SQLite: BEGIN IMMEDIATE already did.
            if c.dialect.name == "postgresql":
                c.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
            _metadata.create_all(c)
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
        with self._writer.begin() as c:
            # The head row, locked first, serialises appenders: PostgreSQL's FOR UPDATE waits for the
            # holder's commit and returns the head it wrote; SQLite holds the write lock since BEGIN
            # IMMEDIATE (it compiles no FOR UPDATE). Why READ COMMITTED is enough on PostgreSQL: every
            # statement after the lock takes a new snapshot, taken after the previous holder committed,
            # so the lookup of request_ids below sees all its records; and nobody else can add records
            # while this transaction holds the lock, since every append takes it first. Should two
            # appenders ever meet anyway, the unique request_id and seq keys refuse the second commit.
            head = sa.select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update()
            last, prev = c.execute(head).one()
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
        with self._snapshot.connect() as c:
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
