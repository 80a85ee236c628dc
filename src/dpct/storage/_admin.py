"""Server-level administration: create and drop PostgreSQL databases, probe a URL."""

from __future__ import annotations

import re

import sqlalchemy as sa

from dpct.errors import ConfigError

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check(name: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a safe database name (lower case, digits, _)")


def create_postgres_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``admin_url``; returns its URL.

    With ``template`` the server copies that database: a few hundredths of a second
    where running the migrations again takes tenths. Nobody may be connected to it.
    """
    _check(name)
    copy = ""
    if template is not None:
        _check(template)
        copy = f' TEMPLATE "{template}"'
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{copy}')
    finally:
        engine.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, name: str) -> None:
    _check(name)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def can_connect(url: str, timeout_s: int = 2) -> bool:
    args = {"connect_timeout": timeout_s} if url.startswith("postgresql") else {}
    engine = sa.create_engine(url, connect_args=args)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()
