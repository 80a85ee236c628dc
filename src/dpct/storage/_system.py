"""What a system task gets from its node: the node's database and settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dpct.config import Settings
from dpct.storage._database import Database, settings_database


@dataclass(frozen=True, slots=True)
class SystemServices:
    """The ``system`` argument of a system task (``@task(..., system=True)``).

    A system task records in the metadata database itself (what retraction cleaning
    deleted, a delivery's transfer row), so it must use the database of the node that
    runs it, never one found in its process's environment.
    """

    database: Database
    settings: Settings
    """The node's settings (for the transfer functions that take them)."""

    @property
    def outbox(self) -> str:
        """Where deliveries for the upstream center go (DPCT_OUTBOX_URL of the node)."""
        return self.settings.outbox


@contextmanager
def system_services(settings: Settings) -> Iterator[SystemServices]:
    """A system task's services for one attempt; the database is disposed after it."""
    with settings_database(settings) as db:
        yield SystemServices(db, settings)
