"""The DTS tables through their storage functions: counters, events, idempotence lookups."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dpct.datamodel import DataSpec
from dpct.storage import (
    Database,
    OutputFile,
    find_dataset_by_checksum,
    finish_transfer,
    get_transfer,
    list_events,
    list_transfers,
    pulled_peers,
    record_transfer_file,
    register_dataset,
    start_transfer,
    transfer_files_of,
)
from dpct.storage._schema import datasets


def test_counters_follow_the_recorded_files(db: Database) -> None:
    with db.write() as conn:
        tid = start_transfer(conn, direction="pull", peer="/in/d1", files=4, nbytes=40, now=1.0)
        for i, status in enumerate(["REGISTERED", "DUPLICATE", "QUARANTINED", "FAILED"]):
            record_transfer_file(
                conn,
                tid,
                name=f"f{i}",
                data_type="hk",
                nbytes=10,
                checksum="sha256:" + "0" * 64,
                status=status,
                now=2.0,
                reason="" if status == "REGISTERED" else f"because {i}",
            )
        finish_transfer(conn, tid, status="PARTIAL", now=3.0, message="1 quarantined")
    with db.read() as conn:
        t = get_transfer(conn, tid)
        files = transfer_files_of(conn, tid)
        kinds = [e.kind for e in list_events(conn, object_type="transfer", newest_first=False)]
        assert pulled_peers(conn, ["/in/d1", "/in/d2"]) == {"/in/d1"}
        assert [r.id for r in list_transfers(conn, direction="pull")] == [tid]
        assert list_transfers(conn, direction="push") == []
    assert t is not None
    assert (t.files, t.bytes, t.registered, t.duplicates, t.quarantined) == (4, 40, 1, 1, 1)
    assert (t.status, t.ended_at, t.message) == ("PARTIAL", 3.0, "1 quarantined")
    assert [f.status for f in files] == ["REGISTERED", "DUPLICATE", "QUARANTINED", "FAILED"]
    assert kinds == [
        "transfer.started",
        "transfer.duplicate",
        "transfer.quarantined",
        "transfer.finished",
    ]


def test_failed_pulls_do_not_count_as_pulled(db: Database) -> None:
    with db.write() as conn:
        tid = start_transfer(conn, direction="pull", peer="/in/d1", files=0, nbytes=0, now=1.0)
        finish_transfer(conn, tid, status="FAILED", now=2.0, message="no manifest")
        with pytest.raises(ValueError):
            finish_transfer(conn, tid, status="RUNNING", now=2.0)
        with pytest.raises(ValueError):
            start_transfer(conn, direction="sideways", peer="x", files=0, nbytes=0, now=1.0)
    with db.read() as conn:
        assert pulled_peers(conn, ["/in/d1"]) == set()
        assert list_events(conn, kind="transfer.failed")[0].message == "FAILED: no manifest"


def test_checksum_lookup_ignores_deleted_datasets_and_other_types(db: Database) -> None:
    checksum = "sha256:" + "a" * 64
    spec = DataSpec("hk", 0, 10)
    file = OutputFile("f", "hk", 1, spec, 1, 5, checksum, "/store/f.parquet")
    with db.write() as conn:
        dataset_id, _ = register_dataset(conn, file, now=1.0, software_version="t")
    with db.read() as conn:
        found = find_dataset_by_checksum(conn, checksum, "hk")
        assert found is not None and found.id == dataset_id
        assert find_dataset_by_checksum(conn, checksum, "bam_images") is None
    with db.write() as conn:
        conn.execute(sa.update(datasets).values(state="DELETED"))
    with db.read() as conn:
        assert find_dataset_by_checksum(conn, checksum, "hk") is None
