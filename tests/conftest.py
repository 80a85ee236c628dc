"""Shared fixtures: a fresh metadata database per test, on SQLite and on PostgreSQL.

PostgreSQL tests create their own database and drop it. A test that takes the migrated
``db`` gets a copy of a template migrated once per session (copying is several times
faster than the migration chain); one that takes only ``db_url`` gets an empty database,
as before (tests/storage/test_migrations.py runs the real chain). Where no server
answers they are skipped, unless DPCT_REQUIRE_POSTGRES=1 (CI sets it) makes that an
error.

Markers: ``slow`` (process-level acceptance tests, science validations) runs in the full
run and is left out by the fast tier, ``-m "not slow"``; ``large`` (large simulations,
long solves) is skipped unless ``-m large`` asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import child_env

from dpct.config import Settings
from dpct.storage import Database, upgrade
from dpct.testing import FakeClock, postgres_available, postgres_database, postgres_template

os.environ.setdefault("DPCT_TASK_MODULES", "dpct.testing.tasks")
from dpct.tasks import load_entry_points

load_entry_points()

pytest_plugins = ["tests.peers"]  # the `s3` fixture: a real S3 server

_PG = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``large`` tests (large simulations, long solves) unless ``-m large`` asks for them."""
    if "large" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="large: opt in with -m large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def _postgres_ok() -> bool:
    global _PG
    if _PG is None:
        _PG = postgres_available()
    return _PG


def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'dpct.sqlite3'}"
        return
    if not _postgres_ok():
        if os.environ.get("DPCT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (DPCT_REQUIRE_POSTGRES=1) but does not answer")
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    # Only a test that takes `db` wants it migrated; the others see an empty database.
    template = request.getfixturevalue("pg_template") if "db" in request.fixturenames else None
    with postgres_database(template=template) as url:
        yield url


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The session's migrated PostgreSQL database, copied for each test that takes ``db``."""
    with postgres_template() as name:
        yield name


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from database_url(backend, tmp_path, request)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        lease_s=2.0,
        heartbeat_s=0.3,
        node_down_after_s=3.0,
        coordinator_tick_s=0.2,
        retry_backoff_s=0.2,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.url)
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """Environment for dpct child processes pointing at this test's home and database."""
    return child_env(settings)
