"""The database half of a backup: a consistent snapshot, what it registers, and the
restore-side rewrite of product locations.

The snapshot is taken first and everything else follows from it: the files a backup
copies are those registered *in the snapshot*, read from the snapshot itself, so a file
registered a moment later is not needed and a restored database never names a file the
backup lacks. SQLite uses the online backup API in one step: one read transaction, which
in WAL mode never blocks the nodes' writes. PostgreSQL exports a repeatable-read
snapshot, runs ``pg_dump`` in it and lists the files in the same transaction.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.errors import Conflict, StorageError
from dpct.storage._database import Database
from dpct.storage._records import DatasetState
from dpct.storage._retention import mark_deleted
from dpct.storage._retraction import dataset_states
from dpct.storage._revisions import current_revision
from dpct.storage._schema import datasets, transfer_files

SQLITE_DUMP = "database.sqlite3"
POSTGRES_DUMP = "database.pgdump"


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A product file registered in the snapshot (any state but DELETED)."""

    dataset_id: int
    location: str
    bytes: int
    sha256: str
    """Hex digest, without the ``sha256:`` prefix the registry stores."""
    state: str


@dataclass(frozen=True, slots=True)
class DatabaseSnapshot:
    kind: str
    """``sqlite`` or ``postgresql``."""
    dump: Path
    """The local dump file: a SQLite database, or a ``pg_dump`` custom-format archive."""
    revision: str | None
    files: list[SnapshotFile]
    tool: str
    """What made the dump (``sqlite <version>``, ``pg_dump <version>``)."""


def snapshot_database(db: Database, folder: Path) -> DatabaseSnapshot:
    """Dump ``db`` into ``folder`` and list the product files registered in the dump."""
    folder.mkdir(parents=True, exist_ok=True)
    if db.is_sqlite:
        return _snapshot_sqlite(db, folder / SQLITE_DUMP)
    return _snapshot_postgres(db, folder / POSTGRES_DUMP)


def registered_files(conn: Connection) -> list[SnapshotFile]:
    d = datasets.c
    query = (
        sa.select(d.id, d.location, d.bytes, d.checksum, d.state)
        .where(d.state != DatasetState.DELETED)
        .order_by(d.id)
    )
    return [
        SnapshotFile(int(i), loc, int(n), checksum.removeprefix("sha256:"), state)
        for i, loc, n, checksum, state in conn.execute(query)
    ]


# ---------------------------------------------------------------- SQLite ----------
def _snapshot_sqlite(db: Database, target: Path) -> DatabaseSnapshot:
    source_path = db.url.database or ""
    if not source_path or source_path == ":memory:":
        raise StorageError("an in-memory SQLite database cannot be backed up")
    target.unlink(missing_ok=True)
    source = sqlite3.connect(source_path, timeout=60.0)
    try:
        copy = sqlite3.connect(target)
        try:
            # pages=-1: the whole database in one step, i.e. one read transaction and one
            # consistent state. Stepping page by page would restart whenever a node commits.
            source.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
    except sqlite3.Error as err:
        raise StorageError(f"cannot back up the SQLite database {source_path}: {err}") from err
    finally:
        source.close()
    # A plain engine: dpct's own would switch the copy back to WAL mode.
    engine = sa.create_engine(f"sqlite:///{target}")
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
            files = registered_files(conn) if revision is not None else []
    finally:
        engine.dispose()
    return DatabaseSnapshot("sqlite", target, revision, files, f"sqlite {sqlite3.sqlite_version}")


# ---------------------------------------------------------------- PostgreSQL ------
def _libpq(db_url: sa.URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for the command-line tools, and the environment for them.

    The password travels in PGPASSWORD, not on a command line other users can read.
    """
    env = dict(os.environ)
    if db_url.password is not None:
        env["PGPASSWORD"] = str(db_url.password)
    uri = db_url.set(drivername="postgresql", password=None)
    return uri.render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StorageError(
            f"{name} is not installed; install the PostgreSQL client tools of the server's "
            "major version (e.g. the postgresql-client package)"
        )
    return path


def _tool_major(path: str) -> tuple[int, str]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or found is None:
        raise StorageError(f"cannot tell the version of {path}: {out.stderr.strip()}")
    return int(found.group(1)), out.stdout.strip()


def _run(args: Sequence[str], env: dict[str, str], what: str) -> None:
    out = subprocess.run(list(args), capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        detail = " ".join(out.stderr.strip().splitlines()[:3]) or f"exit {out.returncode}"
        raise StorageError(f"{what} failed: {detail}")


def _snapshot_postgres(db: Database, target: Path) -> DatabaseSnapshot:
    pg_dump = _tool("pg_dump")
    major, version_text = _tool_major(pg_dump)
    uri, env = _libpq(db.url)
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            server = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
            if server // 10000 > major:
                raise StorageError(
                    f"pg_dump is version {major} but the server is version {server // 10000}; "
                    f"pg_dump cannot dump a newer server: install postgresql-client-"
                    f"{server // 10000} and put its pg_dump first on PATH"
                )
            # pg_dump adopts this transaction's snapshot, and the file list below is read
            # in the same transaction: the dump and the list describe one instant.
            exported = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar_one()
            target.unlink(missing_ok=True)
            _run(
                [pg_dump, "--format=custom", f"--snapshot={exported}", f"--file={target}", uri],
                env,
                f"pg_dump of {db.url.render_as_string()}",
            )
            revision = current_revision(conn)
            files = registered_files(conn) if revision is not None else []
    return DatabaseSnapshot("postgresql", target, revision, files, version_text)


def is_empty(db: Database) -> bool:
    """True when the database holds no tables (a fit target for a restore)."""
    with db.read() as conn:
        return not sa.inspect(conn).get_table_names()


def restore_postgres(db: Database, dump: Path) -> None:
    """Load a ``pg_dump`` archive into ``db``, which must be empty; all or nothing."""
    if not is_empty(db):
        raise Conflict(
            f"the database {db.url.render_as_string()} is not empty; restore into a new, "
            "empty database (createdb NAME), never over a live one"
        )
    pg_restore = _tool("pg_restore")
    uri, env = _libpq(db.url)
    _run(
        [
            pg_restore,
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={uri}",
            str(dump),
        ],
        env,
        f"pg_restore into {db.url.render_as_string()}",
    )


# ---------------------------------------------------------------- after a restore --
def relocate(conn: Connection, moves: Iterable[tuple[int, str, str]]) -> int:
    """Point datasets (and the transfer records that name them) at their new locations.

    ``moves`` are ``(dataset_id, old_location, new_location)``; returns the rows moved.
    """
    batch = [{"b_id": i, "b_old": old, "b_new": new} for i, old, new in moves if old != new]
    if not batch:
        return 0
    d = datasets.c
    conn.execute(
        sa.update(datasets)
        .where(d.id == sa.bindparam("b_id"), d.location == sa.bindparam("b_old"))
        .values(location=sa.bindparam("b_new")),
        batch,
    )
    t = transfer_files.c
    conn.execute(
        sa.update(transfer_files)
        .where(t.dataset_id == sa.bindparam("b_id"), t.location == sa.bindparam("b_old"))
        .values(location=sa.bindparam("b_new")),
        batch,
    )
    return len(batch)


def mark_lost(conn: Connection, dataset_ids: Iterable[int], now: float, why: str) -> list[int]:
    """Mark DELETED the datasets whose files a restore could not bring back.

    A restored row must never point at nothing: the row stays (lineage, history) and a
    ``dataset.deleted`` event says why its file is gone.
    """
    states = dataset_states(conn, dataset_ids)
    marked: list[int] = []
    for state in sorted(set(states.values()) - {DatasetState.DELETED}):
        ids = sorted(i for i, s in states.items() if s == state)
        marked += mark_deleted(conn, ids, now, why, from_state=state)
    return sorted(marked)


def states_now(db: Database, dataset_ids: Iterable[int]) -> dict[int, str]:
    """The live database's current state of these datasets (to explain a missing file)."""
    with db.read() as conn:
        return dataset_states(conn, dataset_ids)
