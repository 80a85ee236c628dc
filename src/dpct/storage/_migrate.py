"""Schema migrations with Alembic, run programmatically so `dpct db upgrade` needs no ini."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

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


def upgrade(db: Database, revision: str = "head") -> str:
    """Migrate the database to ``revision``; returns the revision it ends at."""
    with db.write() as conn:
        command.upgrade(_config(conn), revision)
        return current_revision(conn) or "base"


def downgrade(db: Database, revision: str) -> str:
    with db.write() as conn:
        command.downgrade(_config(conn), revision)
        return current_revision(conn) or "base"
