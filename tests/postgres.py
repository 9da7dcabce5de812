"""Throwaway PostgreSQL clusters for integration tests.

Theory of operation. ``postgres_server()`` yields a ``PostgresServer``: the server
named by ``$CUSTODY_TEST_PG_DSN`` when that is set (a libpq connection string or
URL of a role that may create databases), otherwise a ``ThrowawayCluster`` that
it starts and, at the end, stops and deletes. Tests get a fresh database each
from ``PostgresServer.create_database`` (a random name, dropped afterwards with
``WITH (FORCE)``), never the server's own databases, and never the system
PostgreSQL on 5432 (ARCHITECTURE.md "Real components").

A throwaway cluster lives in a new directory under the system temp dir:
``initdb`` (trust authentication, no fsync of the initial files), then
``pg_ctl start -W -o "-p PORT -k SOCKDIR -c listen_addresses=127.0.0.1"`` on a
free loopback port, then a deadline-based wait until a connection succeeds; a
start that loses the port race is retried on a new port. ``initdb`` refuses to
run as root, so when we are root every server command runs as the ``postgres``
user (``runuser``) and the directory is handed to that user (pytest's own temp
dirs are private to root, hence not used). ``stop`` is ``pg_ctl stop -m fast``
(``immediate`` if that times out), then the directory is removed.

This module imports no pytest, so benchmarks and scripts can use it too; the
fixtures are at the end of ``tests/conftest.py`` ("PostgreSQL fixtures").
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.brokers import LOOPBACK, free_port

__all__ = [
    "ENV_DSN",
    "PostgresError",
    "PostgresServer",
    "ThrowawayCluster",
    "pg_bindir",
    "postgres_server",
]

ENV_DSN = "CUSTODY_TEST_PG_DSN"
OS_USER = "postgres"  # who runs the server when we are root (initdb refuses root)
SUPERUSER = "postgres"
# A fresh cluster accepts connections within a second or two; the margin is for loaded CI.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 120.0  # initdb on a slow disk
_POLL_S = 0.05
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """The cluster did not initialise, start or stop as asked; the message carries its log."""


def pg_bindir() -> Path:
    """Where initdb/pg_ctl live: Debian's newest /usr/lib/postgresql/N/bin, else on PATH."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    if found is None:
        raise PostgresError(
            "initdb not found: install the Debian package postgresql "
            "(deploy/ensure-debian-packages.sh) or set " + ENV_DSN
        )
    return Path(found).parent


def _url(conninfo: str) -> str:
    """``conninfo`` as a ``postgresql://`` URL (what ``ledger.stores.open_store`` recognises)."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    user = quote(params.pop("user", ""), safe="")
    password = params.pop("password", None)
    dbname = quote(params.pop("dbname", ""), safe="")
    auth = user + (":" + quote(password, safe="") if password is not None else "")
    query = urlencode(params)  # host and port too: a socket directory cannot go in the netloc
    return f"postgresql://{auth}{'@' if auth else ''}/{dbname}" + (f"?{query}" if query else "")


class PostgresServer:
    """A server tests may create databases on, reached through ``admin_dsn``."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn

    def dsn(self, dbname: str) -> str:
        """A libpq connection string for ``dbname`` on this server."""
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def url(self, dbname: str) -> str:
        """The same as a ``postgresql://`` URL."""
        return _url(self.dsn(dbname))

    def create_database(self, prefix: str = "custody_test") -> str:
        """A new empty database with a random name; returns the name."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        if not _DB_NAME.match(name):
            raise ValueError(f"unsuitable database name {name!r}")
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whoever is still connected to it."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class ThrowawayCluster:
    """A private PostgreSQL cluster in a new temp directory, on a free loopback port.

    ``with ThrowawayCluster() as cluster:`` starts it, then stops it and deletes
    its directory. ``admin_dsn`` connects as the superuser over TCP.
    """

    def __init__(self, *, host: str = LOOPBACK, parent: Path | None = None) -> None:
        self.host = host
        self.parent = parent
        self.bindir = pg_bindir()
        self.workdir: Path | None = None
        self.port = 0
        self._as_root = os.geteuid() == 0

    # Paths
    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise PostgresError("the cluster has no directory yet (call start())")
        return self.workdir

    @property
    def data_dir(self) -> Path:
        return self._dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self._dir / "sock"

    @property
    def log_path(self) -> Path:
        return self._dir / "postgres.log"

    @property
    def admin_dsn(self) -> str:
        return make_conninfo(
            "", host=self.host, port=self.port, user=SUPERUSER, dbname="postgres",
            connect_timeout=2,
        )  # fmt: skip

    # Lifecycle
    def start(self, timeout: float = START_TIMEOUT_S) -> ThrowawayCluster:
        """initdb (first time), then start and wait until it accepts connections."""
        if self.workdir is None:
            self._initdb()
        for attempt in range(3):
            # A restart keeps the port, so that clients can reconnect to the same address.
            if attempt or not self.port:
                self.port = free_port(self.host)
            try:
                self._start_and_wait(timeout)
                return self
            except PostgresError:
                if attempt < 2 and "already in use" in self.log_text():
                    continue  # lost the race for the port: try another one
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """``pg_ctl stop -m fast`` (``immediate`` when that times out)."""
        if self.workdir is None or not (self.data_dir / "postmaster.pid").exists():
            return
        fast = self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(max(1, int(timeout))))
        if fast.returncode != 0:
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", str(max(1, int(timeout))))
            raise PostgresError(f"pg_ctl stop -m fast failed:\n{fast.stderr}{self._log_tail()}")

    def remove(self) -> None:
        """Delete the cluster's directory (after ``stop``)."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_text(self) -> str:
        if self.workdir is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.remove()

    # Internals
    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", OS_USER, "--", *args] if self._as_root else list(args)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
            check=False, cwd=self._dir,
        )  # fmt: skip

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _initdb(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="custody-pg-", dir=self.parent))
        if self._as_root:
            owner = pwd.getpwnam(OS_USER)
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        self.socket_dir.mkdir()
        if self._as_root:
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
        done = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            self.remove()
            raise PostgresError(f"initdb exited {done.returncode}:\n{done.stderr}")

    def _start_and_wait(self, timeout: float) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host}"
        started = self._pg_ctl("-l", str(self.log_path), "-W", "-o", options, "start")
        if started.returncode != 0:
            raise PostgresError(f"pg_ctl start exited {started.returncode}:\n{started.stderr}")
        deadline = time.monotonic() + timeout
        seen = len(self.log_text())
        while True:
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = str(exc).strip()
            fatal = [
                line
                for line in self.log_text()[seen:].splitlines()
                if "FATAL:" in line and "the database system is starting up" not in line
            ]
            if fatal:
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "10")
                raise PostgresError(f"postgres did not start:\n{self._log_tail()}")
            if time.monotonic() >= deadline:
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "10")
                raise PostgresError(
                    f"postgres not accepting connections after {timeout} s ({last}):\n"
                    f"{self._log_tail()}"
                )
            time.sleep(_POLL_S)

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """``$CUSTODY_TEST_PG_DSN``'s server, or a throwaway cluster for the duration."""
    external = os.environ.get(ENV_DSN, "").strip()
    if external:
        yield PostgresServer(external)
        return
    with ThrowawayCluster() as cluster:
        yield PostgresServer(cluster.admin_dsn)
