"""Helpers for testing dpct and the pipelines built on it: databases, clocks, task types."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from dpct.storage import (
    Database,
    can_connect,
    create_postgres_database,
    drop_postgres_database,
    upgrade,
)

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class FakeClock:
    """A clock that moves only when told to: ``clock()`` returns the time."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def sqlite_database(path: str) -> Database:
    """A fresh SQLite metadata database at ``path``, migrated to head."""
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    return db


@contextmanager
def postgres_database(
    admin_url: str = POSTGRES_ADMIN_URL, template: str | None = None
) -> Iterator[str]:
    """Create a uniquely named PostgreSQL database, yield its URL, then drop it.

    Empty, or a copy of ``template`` (see ``postgres_template``).
    """
    name = f"dpct_test_{uuid.uuid4().hex[:12]}"
    url = create_postgres_database(admin_url, name, template)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, name)


@contextmanager
def postgres_template(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A database migrated to head, to copy per test: the migration chain then runs once
    per test session instead of once per test. Yields its name; dropped at the end.

    Named after this process, so test sessions sharing one server never share a template.
    """
    name = f"dpct_template_{os.getpid()}"
    drop_postgres_database(admin_url, name)  # left behind by a killed session of this pid
    url = create_postgres_database(admin_url, name)
    try:
        db = Database(url)
        try:
            upgrade(db)
        finally:
            db.dispose()  # a template must have no connections when it is copied
        yield name
    finally:
        drop_postgres_database(admin_url, name)


def postgres_available(admin_url: str = POSTGRES_ADMIN_URL) -> bool:
    return can_connect(admin_url)
