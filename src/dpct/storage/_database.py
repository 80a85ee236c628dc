"""The metadata database handle: engine set-up per backend, transactions, schema checks.

Callers own transactions: a service opens ``with db.write() as conn:`` and calls several
named queries with that connection. On SQLite every write transaction starts with
``BEGIN IMMEDIATE`` so that two processes never deadlock upgrading a read lock, and the
write lock doubles as the job-leasing lock; reads start a deferred transaction and, in
WAL mode, never wait for writers.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from dpct.config import Settings
from dpct.errors import ConfigError, DatabaseUnreachable, SchemaOutdated, StorageError
from dpct.storage._revisions import current_revision, head_revision, known_revision

T = TypeVar("T")

_READ_OPTION = "dpct_read"


class Database:
    """A metadata database: SQLite (embedded default) or PostgreSQL.

    Parameters
    ----------
    url
        SQLAlchemy URL, e.g. ``sqlite:////data/dpct.sqlite3`` or
        ``postgresql+psycopg://host/dpct``.
    sqlite_synchronous
        SQLite's ``synchronous`` pragma in WAL mode. ``NORMAL`` (default) loses nothing
        when a process is killed; a power cut may lose the last transactions but never
        corrupts the file. ``FULL`` also survives a power cut, at one fsync per commit.
    """

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", create: bool = True
    ) -> None:
        try:
            self.url = sa.make_url(url)
        except sa.exc.ArgumentError as err:
            raise ConfigError(
                f"DPCT_DATABASE_URL {url!r} is not a database URL; use e.g. "
                "postgresql://user@host/dbname, or leave it unset for SQLite in DPCT_HOME"
            ) from err
        backend = self.url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"database backend {backend!r} is not supported; use SQLite or PostgreSQL"
            )
        self.is_sqlite = backend == "sqlite"
        self.is_postgresql = backend == "postgresql"
        self.sqlite_path: Path | None = None
        """The SQLite file, named in errors about it; None for PostgreSQL or in memory."""
        if self.is_sqlite:
            database = self.url.database or ""
            if database and database != ":memory:":
                path = self.sqlite_path = Path(database)
                if not create and not path.exists():
                    raise SchemaOutdated(
                        f"there is no metadata database at {path}; check DPCT_HOME, or "
                        "create it with `dpct db upgrade`"
                    )
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise ConfigError(
                        f"cannot create the folder of the SQLite database {path}: "
                        f"{err.strerror}; check DPCT_HOME"
                    ) from err
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 60.0})
            _configure_sqlite(self.engine, sqlite_synchronous)
        else:
            self.engine = sa.create_engine(
                self.url,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 5} if self.is_postgresql else {},
            )

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    def dispose(self) -> None:
        self.engine.dispose()

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa.exc.DatabaseError as err:
            if self.sqlite_path is not None:
                raise self._sqlite_error(err) from err
            if not isinstance(err, sa.exc.OperationalError):
                raise
            raise DatabaseUnreachable(
                f"cannot reach the metadata database at {self.url.render_as_string()}: "
                f"{_first_line(err)}; check DPCT_DATABASE_URL and that the server runs"
            ) from err

    def _sqlite_error(self, err: sa.exc.DatabaseError) -> StorageError:
        """What is wrong with the SQLite file, named, with what to do (there is no server)."""
        path, cause = self.sqlite_path, _first_line(err)
        if _read_only(err, path):
            return StorageError(
                f"the SQLite database {path} is read-only for this user ({cause}); dpct "
                "writes the file, its -wal and -shm files and their folder: check their "
                "owner and permissions, or set DPCT_HOME to a writable copy"
            )
        if isinstance(err, sa.exc.OperationalError) and _is_retryable(err):
            return DatabaseUnreachable(
                f"the SQLite database {path} stayed locked by another process ({cause}); "
                "try again, and look for a stopped process holding it"
            )
        if isinstance(err, sa.exc.OperationalError):
            return DatabaseUnreachable(
                f"cannot open the SQLite database {path}: {cause}; check DPCT_HOME "
                "(or DPCT_DATABASE_URL) and the permissions of the file and its folder"
            )
        return StorageError(
            f"{path} is not a usable SQLite database ({cause}); point DPCT_HOME (or "
            "DPCT_DATABASE_URL) at the dpct database, or restore it from a backup "
            "(moving the file away and running `dpct db upgrade` starts an empty one)"
        )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success."""
        try:
            with self._connect() as conn, conn.begin():
                yield conn
        except sa.exc.OperationalError as err:
            # Not retryable, and a traceback would hide the cause: say which file.
            if self.sqlite_path is not None and _read_only(err, self.sqlite_path):
                raise self._sqlite_error(err) from err
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that never blocks writers."""
        with self._connect() as conn:
            conn = conn.execution_options(**{_READ_OPTION: True})
            with conn.begin():
                yield conn

    def run_write(self, work: Callable[[Connection], T], *, attempts: int = 8) -> T:
        """Run ``work`` in a write transaction, retrying on deadlock or lock timeout.

        ``work`` must be safe to run again from the start: nothing it did in a failed
        attempt was committed.
        """
        for attempt in range(attempts):
            try:
                with self.write() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as err:
                # Not retried here when the connection was lost: the commit may have
                # happened with only its answer lost. The caller decides.
                if _connection_lost(err):
                    raise DatabaseUnreachable(
                        f"lost the connection to the metadata database at "
                        f"{self.url.render_as_string()}: {_first_line(err)}; check "
                        "that the server runs"
                    ) from err
                if not isinstance(err, sa.exc.OperationalError):
                    raise
                if attempt == attempts - 1 or not _is_retryable(err):
                    raise StorageError(
                        f"write to the metadata database failed: {_first_line(err)}"
                    ) from err
                time.sleep(min(0.5, 0.005 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def checkpoint(self) -> None:
        """Copy SQLite's write-ahead log into the database file, without blocking writers.

        A PASSIVE checkpoint takes no lock that writers wait for; once the whole log is
        copied, the next writer starts it over (and trims it to 64 MB). PostgreSQL
        checkpoints by itself: nothing to do.
        """
        if not self.is_sqlite:
            return
        with self._connect() as conn:
            raw = conn.connection.driver_connection
            _, log_pages, _copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log_pages > _RESTART_PAGES:
                # Readers kept the log from ever being fully copied and started over: a
                # long log makes every page lookup slower. RESTART waits for them, and
                # blocks writers while it waits: briefly, or a reader that is stopped
                # (SIGSTOP) would stall every writer. It gives up and tries next tick.
                raw.execute("PRAGMA busy_timeout=200")
                try:
                    raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                finally:
                    raw.execute("PRAGMA busy_timeout=60000")

    def check_schema(self) -> None:
        """Raise SchemaOutdated unless the database is at this dpct's schema head."""
        with self.read() as conn:
            current = current_revision(conn)
        head = head_revision()
        if current is not None and not known_revision(current):
            raise StorageError(
                f"the metadata database {self.url.render_as_string()} is at schema revision "
                f"{current!r}, which this dpct does not know: it was made by a newer dpct, or "
                "is not a dpct database; upgrade dpct or point DPCT_DATABASE_URL elsewhere"
            )
        if current != head:
            state = "empty" if current is None else f"at revision {current}"
            raise SchemaOutdated(
                f"the metadata database {self.url.render_as_string()} is {state}, "
                f"this dpct needs revision {head}; run `dpct db upgrade`"
            )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the sqlite3 module, issue BEGIN (see the "begin" hook).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        # Checkpoints are the coordinator's job (Database.checkpoint, every tick): when
        # the committing node runs them (the default, every 1000 pages), each one
        # stalls that node's transaction and throughput falls by half or more. The high
        # threshold stays as a backstop when no coordinator runs.
        cur.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        cur.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            _begin_immediate(conn.connection.driver_connection)


_AUTOCHECKPOINT_PAGES = 25_000
_RESTART_PAGES = 4_000
_WAL_SIZE_LIMIT = 64 * 1024 * 1024


def _begin_immediate(raw: sqlite3.Connection, timeout_s: float = 60.0) -> None:
    """Take SQLite's write lock, retrying every few hundred microseconds while it is held.

    SQLite's own busy handler sleeps 1, 2, 5, 10 … 100 ms between tries; with several
    nodes committing every millisecond those sleeps, not the work, would set the pace.
    """
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout_s
        delay = 50e-6
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2e-3)
    finally:
        raw.execute("PRAGMA busy_timeout=60000")


def _is_retryable(err: sa.exc.OperationalError) -> bool:
    text = str(err.orig).lower()
    return any(
        marker in text
        for marker in ("database is locked", "deadlock detected", "could not serialize")
    )


_MISCONFIGURED = (
    "authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "password",
    "permission denied",
)
"""What PostgreSQL says when the settings, not the server's availability, are wrong."""


def _misconfigured(err: BaseException) -> bool:
    text = str(getattr(err, "orig", None) or err).lower()
    return any(marker in text for marker in _MISCONFIGURED)


_SERVER_ENDED_SESSION = {"57P01", "57P02", "57P03", "57P05", "25P03"}
"""admin/crash shutdown, cannot connect now, idle session and idle-in-transaction
timeouts: the server ended or refused the session; a new one may well succeed."""


def _connection_lost(err: sa.exc.DBAPIError) -> bool:
    """The link to the server went away under the work (a restart, a session the server
    ended, a network cut), as opposed to an error in the work itself."""
    if err.connection_invalidated:
        return True
    orig = err.orig
    if isinstance(orig, sqlite3.Error) or _misconfigured(err):
        return False
    state = str(getattr(orig, "sqlstate", None) or "")
    if state.startswith("08") or state in _SERVER_ENDED_SESSION:
        return True
    # The PostgreSQL driver says nothing more than OperationalError when the socket broke.
    return not state and isinstance(err, sa.exc.OperationalError | sa.exc.InterfaceError)


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` means the metadata database is out of reach for now (a server
    restarting, a dropped connection, SQLite locked for too long), so that a long-running
    process should wait for it; False for wrong settings, which waiting cannot fix."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SchemaOutdated | ConfigError) or _misconfigured(current):
            return False
        if isinstance(current, DatabaseUnreachable):
            return True
        if isinstance(current, sa.exc.DBAPIError):
            if isinstance(current.orig, sqlite3.OperationalError):
                return "locked" in str(current.orig).lower()
            return _connection_lost(current)
        current = current.__cause__ or current.__context__
    return False


def _read_only(err: sa.exc.DatabaseError, path: Path | None) -> bool:
    """SQLite said so, or the file or its folder cannot be written (which SQLite may
    report only as "unable to open database file")."""
    if "readonly" in str(getattr(err, "orig", err)).lower():
        return True
    if path is None or not isinstance(err, sa.exc.OperationalError):
        return False
    return (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK)


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


@contextmanager
def settings_database(settings: Settings) -> Iterator[Database]:
    """The metadata database of ``settings``, opened for one piece of work and disposed.

    For a system task's attempt, which records in the database itself (housekeeping,
    outbound deliveries) rather than through its outputs; the database must exist.
    """
    db = Database(settings.url, sqlite_synchronous=settings.sqlite_synchronous, create=False)
    try:
        yield db
    finally:
        db.dispose()


def serialize_on(conn: Connection, key: str) -> None:
    """Hold a transaction-scoped lock on ``key`` (PostgreSQL) so that two transactions
    doing find-then-insert on the same thing run one after the other. SQLite needs none:
    its write transactions are serialised already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
