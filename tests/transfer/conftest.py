"""Fixtures: an HTTP delivery server, a second DPC (the S3 server is in tests/peers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.transfer.helpers import DeliveryServer

from dpct.config import Settings
from dpct.storage import Database, upgrade


@pytest.fixture
def serve() -> Iterator[Callable[..., DeliveryServer]]:
    """Start a :class:`DeliveryServer` over a folder; stopped after the test."""
    servers: list[DeliveryServer] = []

    def start(root: Path, **options: object) -> DeliveryServer:
        server = DeliveryServer(root, **options)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@dataclass
class Site:
    """Another DPC: its own home, product store and SQLite database."""

    settings: Settings
    db: Database


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Site]:
    home = tmp_path / "elsewhere"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'dpct.sqlite3'}")
    db = Database(settings.url)
    upgrade(db)
    yield Site(settings, db)
    db.dispose()
