"""What every command needs: settings from the environment and the database handle."""

from __future__ import annotations

from functools import cache

from pydantic import ValidationError

from dpct.config import Settings
from dpct.errors import ConfigError
from dpct.storage import Database


@cache
def settings() -> Settings:
    try:
        return Settings()
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check across fields names its variables itself
            raise ConfigError(message) from err
        field = ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(f"DPCT_{field}={first['input']}: {message}") from err


def database(*, check_schema: bool = True, create: bool = False) -> Database:
    """The database; only creating commands (``db upgrade``, ``demo``) may create its file."""
    s = settings()
    db = Database(s.url, sqlite_synchronous=s.sqlite_synchronous, create=create)
    if check_schema:
        db.check_schema()
    return db
