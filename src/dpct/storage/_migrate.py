"""Schema migrations with Alembic, run programmatically so `dpct db upgrade` needs no ini."""

from __future__ import annotations

from alembic import command
from alembic.util.exc import CommandError

from dpct.errors import StorageError
from dpct.storage._database import Database
from dpct.storage._revisions import alembic_config, current_revision, known_revision


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
            step(alembic_config(conn), revision)
        except CommandError as err:
            raise StorageError(f"cannot migrate to {revision!r}: {err}") from err
        return current_revision(conn) or "base"
