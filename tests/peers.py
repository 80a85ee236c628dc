"""Real network peers for the tests: an S3 server (moto in server mode) on a free port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from dpct.config import Settings
from dpct.storage import Database, upgrade
from dpct.testing.postgres import PostgresCluster, postgres_binaries_found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3:
    endpoint: str
    bucket: str
    fs: object

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def upload(self, folder: Path, key: str) -> str:
        """Copy a local delivery folder under ``key``; returns its s3:// URL."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.fs.put_file(str(path), f"{self.bucket}/{key}/{path.relative_to(folder)}")
        return self.url(key)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """A real S3 endpoint (moto's server on a free port), reached through the env only."""
    s3fs = pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # moto keeps its buckets per process, whatever the server: start each test empty.
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir("deliveries")
    try:
        yield S3(endpoint, "deliveries", fs)
    finally:
        requests.post(f"{endpoint}/moto-api/reset", timeout=10)
        server.stop()


__all__ = ["S3", "free_port", "s3"]


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test's own, on a free port, that it may restart
    (never the shared server on 5432). Its database ``dpct`` is migrated to head."""
    if not postgres_binaries_found():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    cluster = PostgresCluster(
        prefix="dpct-test-pg-", server_settings={"idle_in_transaction_session_timeout": "1s"}
    )
    try:
        cluster.init()
        db = Database(Settings(database_url=cluster.url).url)
        upgrade(db)
        db.dispose()
        yield cluster
    finally:
        cluster.remove()
