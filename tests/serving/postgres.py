"""A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package.

``initdb`` into a new temporary directory (trust authentication, user ``rayfolio``), ``postgres``
on a free port of 127.0.0.1 started as our own child process, one cheap database per test,
stopped by its PID at the end. PostgreSQL refuses to run as root: as root, both run as the
package's ``postgres`` account (or ``nobody``), in a directory that account owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "rayfolio"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None without the server package."""
    candidates = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             timeout=10, check=True).stdout.strip())  # fmt: skip
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
                         reverse=True)  # fmt: skip  # the newest version first
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "postgres").is_file():
            return Path(candidate)
    return None


def _account() -> pwd.struct_passwd | None:
    """Whom the server runs as: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("PostgreSQL will not run as root and there is no 'postgres' or 'nobody' account")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    process: subprocess.Popen
    directory: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        # CREATE/DROP DATABASE cannot run inside a transaction.
        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True)

    def create_database(self) -> str:
        """A new, empty database; its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends the sessions a test's engines still pool, so the server never runs out of them.
        with self._admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        return (self.directory / "server.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """Stop our server by its PID: SIGINT is PostgreSQL's fast shutdown (SIGTERM, the smart one,
        would wait for every pooled client connection to close); SIGKILL if it does not stop."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGINT)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start(bindir: Path) -> PostgresServer:
    """initdb and start a server; raises RuntimeError, with the server's words, if it does not come up."""
    account = _account()
    directory = Path(tempfile.mkdtemp(prefix="rayfolio-pg-"))  # in /tmp, which any account can enter
    data = directory / "data"
    as_account = {}
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    try:
        initdb = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8",
                                 "--no-sync"], cwd=directory, capture_output=True, text=True, timeout=120,
                                **as_account)  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {(initdb.stderr or initdb.stdout).strip()[-1000:]}")
        port = _free_port()
        # fsync off: a throwaway server whose data need not survive a crash of the machine, and
        # tests on 2 shared cores should not wait on disk flushes. Connections: 4 appenders and
        # the tests' pools at once, well under the default 100.
        command = [str(bindir / "postgres"), "-D", str(data), "-k", str(directory), "-h", "127.0.0.1",
                   "-p", str(port), "-c", "fsync=off", "-c", "synchronous_commit=off",
                   "-c", "full_page_writes=off"]  # fmt: skip
        with (directory / "server.log").open("wb") as log:
            process = subprocess.Popen(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT, **as_account)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    server = PostgresServer(process, directory, port)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            server._admin().close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {process.returncode}" if process.poll() is not None else "did not answer"
                log_tail = server.log()
                server.stop()
                raise RuntimeError(f"PostgreSQL on 127.0.0.1:{port} {why} within {START_TIMEOUT_S:.0f} s: "
                                   f"{log_tail}") from None  # fmt: skip
            time.sleep(0.1)
