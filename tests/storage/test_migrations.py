"""Migrations give the schema the code declares, both ways, on both backends."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dpct.errors import DatabaseUnreachable, SchemaOutdated, StorageError
from dpct.storage import Database, downgrade, head_revision, upgrade
from dpct.storage._schema import metadata


def _skip_expression_index(obj, name, type_, reflected, compare_to) -> bool:
    # Alembic cannot compare the (priority DESC) index; _queue_index checks it instead.
    return name != "ix_jobs_queue"


def _diff(db: Database) -> list:
    with db.read() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _skip_expression_index})
        return compare_metadata(context, metadata)


def _queue_index(db: Database) -> str:
    with db.read() as conn:
        if db.is_sqlite:
            query = "SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_queue'"
        else:
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_queue'"
        return conn.exec_driver_sql(query).scalar() or ""


def test_upgrade_gives_declared_schema_and_round_trips(db_url: str) -> None:
    db = Database(db_url)
    assert upgrade(db) == head_revision()
    assert _diff(db) == []
    assert "priority DESC" in _queue_index(db)
    assert downgrade(db, "base") == "base"
    with db.read() as conn:
        tables = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    assert tables == set()
    upgrade(db)
    assert _diff(db) == []
    db.check_schema()


def test_job_count_triggers_exist_after_migration(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db)
    with db.read() as conn:
        if db.is_sqlite:
            names = {
                r[0]
                for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='trigger'")
            }
        else:
            names = {
                r[0]
                for r in conn.exec_driver_sql(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
                )
            }
    assert {"jobs_count_update"} <= names


def test_empty_or_old_schema_says_to_upgrade(db_url: str) -> None:
    db = Database(db_url)
    with pytest.raises(SchemaOutdated, match=r"is empty.*run `dpct db upgrade`"):
        db.check_schema()
    upgrade(db)
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(StorageError, match=r"at schema revision '0000', which this dpct does not"):
        db.check_schema()
    with pytest.raises(StorageError, match="refusing to migrate it"):
        upgrade(db)
    downgrade_to_base = Database(db_url)
    with downgrade_to_base.write() as conn:
        conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{head_revision()}'")
    downgrade(downgrade_to_base, "base")
    with pytest.raises(SchemaOutdated, match=r"is empty, this dpct needs revision"):
        db.check_schema()


def test_unreachable_database_is_a_clear_error() -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnreachable, match="cannot reach the metadata database"):
        db.check_schema()
