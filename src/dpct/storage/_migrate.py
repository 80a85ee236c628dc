"""Schema migrations with Alembic, run programmatically so `dpct db upgrade` needs no ini."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from dpct.errors import StorageError
from dpct.storage._database import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The schema revision stored in the database (None when it has none)."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(db: Database, revision: str = "head") -> str:
    """Migrate the database to ``revision``; returns the revision it ends at."""
    return _migrate(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> str:
    return _migrate(db, command.downgrade, revision)


def _migrate(db: Database, step, revision: str) -> str:
    with db.write() as conn:
        current = current_revision(conn)
        if current is not None and not known_revision(current):
            raise StorageError(
                f"the database is at schema revision {current!r}, which this dpct does not "
                "know (made by a newer dpct?); refusing to migrate it"
            )
        try:
            step(_config(conn), revision)
        except CommandError as err:
            raise StorageError(f"cannot migrate to {revision!r}: {err}") from err
        return current_revision(conn) or "base"
