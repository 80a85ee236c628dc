"""`dpct store check`: orphan files, rows without a file, corrupt files; and the repair.

The store and the database are real (a folder or an S3 server; SQLite or PostgreSQL);
the faults are made the way they happen: a file deleted or overwritten behind dpct's
back, a write cut short, an output never registered, a prune cut between its commit and
its delete.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest
from tests.cli.runners import InProcess
from tests.peers import S3

import dpct.testing.tasks  # noqa: F401  (registers testing_counts)
from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.events import service as event_service
from dpct.storage import (
    Database,
    ProductStore,
    find_datasets,
    register_dataset,
    store_at,
)
from dpct.storage import service as storage_service
from dpct.storage._retention import mark_deleted
from dpct.storage._transfers import find_dataset_by_checksum

SPEC = DataSpec("testing_counts", 700 * NS_PER_DAY, 700 * NS_PER_DAY + 3600 * 10**9)
HOUR = 3600.0


def _table(n: int = 50) -> pa.Table:
    return pa.table({"obmt_ns": list(range(n)), "value": [float(i) for i in range(n)]})


def _register(db: Database, store: ProductStore, k: int) -> tuple[int, str, str]:
    """Write and register one product; returns (dataset id, location, checksum)."""
    out = store.write(_table(10 + k), SPEC.with_type("testing_counts"), f"t{k}")
    with db.write() as conn:
        dataset_id, _ = register_dataset(conn, out, now=time.time(), software_version="test")
    return dataset_id, out.location, out.checksum


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _state(db: Database, dataset_id: int) -> str:
    return storage_service.dataset(db, dataset_id).state


def test_check_finds_each_fault_and_repair_fixes_it(db: Database, settings: Settings) -> None:
    store = store_at(settings.store_root)
    intact, intact_loc, _ = _register(db, store, 1)
    gone, gone_loc, gone_sum = _register(db, store, 2)
    flipped, flipped_loc, _ = _register(db, store, 3)
    cut, cut_loc, _ = _register(db, store, 4)
    pruned, pruned_loc, _ = _register(db, store, 5)

    Path(gone_loc).unlink()  # deleted behind dpct's back
    raw = bytearray(Path(flipped_loc).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte changed, same size
    Path(flipped_loc).write_bytes(bytes(raw))
    Path(cut_loc).write_bytes(Path(cut_loc).read_bytes()[:-7])  # truncated
    with db.write() as conn:  # a prune that crashed between its commit and the delete
        mark_deleted(conn, [pruned], time.time(), "retention", from_state="AVAILABLE")
    unregistered = Path(store.write(_table(), SPEC, "j9a1-deadbeef").location)
    partial = unregistered.with_name("testing_counts_x_j9a2-cafebabe.parquet.tmp")
    partial.write_bytes(b"PAR1 half a row group")
    young = Path(store.write(_table(), SPEC, "j9a3-0badf00d").location)
    for path in (unregistered, partial, Path(pruned_loc)):
        _age(path, 2 * HOUR)

    report = storage_service.check_store(db, settings)
    assert not report.clean
    assert {(o.location, o.partial) for o in report.orphans} == {
        (str(unregistered), False),
        (str(partial), True),
        (pruned_loc, False),
    }
    assert [o.location for o in report.recent] == [str(young)]  # a registration in progress?
    assert [(b.dataset_id, b.problem) for b in report.missing] == [(gone, "no file")]
    corrupt = {b.dataset_id: b.problem for b in report.corrupt}
    assert sorted(corrupt) == [flipped, cut]
    assert corrupt[flipped].startswith("SHA-256 sha256:")
    assert corrupt[cut].endswith(f"registered {Path(cut_loc).stat().st_size + 7}")
    assert report.files == 7 and report.unresolved == 6 and not report.unreadable
    assert all(o.age_s is not None and o.age_s >= 2 * HOUR - 60 for o in report.orphans)
    # Checking changed nothing.
    assert partial.exists() and unregistered.exists() and _state(db, gone) == "AVAILABLE"

    fast = storage_service.check_store(db, settings, checksums=False)
    assert [b.dataset_id for b in fast.corrupt] == [cut]  # sizes only: the flip goes unseen

    repaired = storage_service.check_store(db, settings, repair=True)
    assert all(o.removed for o in repaired.orphans) and len(repaired.orphans) == 3
    assert repaired.unresolved == 0 and not repaired.clean
    assert [(b.dataset_id, b.marked) for b in repaired.missing] == [(gone, "MISSING")]
    assert {b.dataset_id: b.marked for b in repaired.corrupt} == {
        flipped: "CORRUPT",
        cut: "CORRUPT",
    }
    assert not unregistered.exists() and not partial.exists() and not Path(pruned_loc).exists()
    assert young.exists() and Path(intact_loc).exists()
    assert Path(flipped_loc).exists(), "a corrupt file is kept for inspection"
    states = {i: _state(db, i) for i in (intact, gone, flipped, cut, pruned)}
    assert states == {
        intact: "AVAILABLE",
        gone: "MISSING",
        flipped: "CORRUPT",
        cut: "CORRUPT",
        pruned: "DELETED",
    }
    # Jobs no longer read them; a re-delivery of the lost bytes registers anew.
    with db.read() as conn:
        assert [d.id for d in find_datasets(conn, SPEC)] == [intact]
        assert find_dataset_by_checksum(conn, gone_sum, "testing_counts") is None
    kinds = [e.kind for e in event_service.events(db, limit=100, kind="dataset.*")]
    assert kinds.count("dataset.missing") == 1 and kinds.count("dataset.corrupt") == 2
    (log,) = event_service.events(db, limit=10, kind="store.repaired")
    assert log.message.startswith("3 orphan files removed") and str(partial) in log.message

    after = storage_service.check_store(db, settings)
    assert after.clean and [o.location for o in after.recent] == [str(young)]
    # With no grace the young file is an orphan like any other.
    last = storage_service.check_store(db, settings, repair=True, grace_s=0)
    assert [(o.location, o.removed) for o in last.orphans] == [(str(young), True)]
    assert storage_service.check_store(db, settings, grace_s=0).clean


def test_a_clean_store_is_clean_and_a_registration_is_no_orphan(
    db: Database, settings: Settings
) -> None:
    store = store_at(settings.store_root)
    empty = storage_service.check_store(db, settings, grace_s=0)
    assert empty.clean and empty.files == 0 and empty.unresolved == 0
    for k in range(3):
        _register(db, store, k)
    report = storage_service.check_store(db, settings, repair=True, grace_s=0)
    assert report.clean and report.files == 3 and report.datasets == 3
    assert len(list(Path(settings.store_root).rglob("*.parquet"))) == 3


def test_check_on_an_s3_store(tmp_path: Path, s3: S3) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'dpct.sqlite3'}",
        store_url=s3.url("products"),
    )
    db = Database(settings.url)
    from dpct.storage import upgrade

    upgrade(db)
    try:
        store = store_at(settings.store_root)
        kept, _, _ = _register(db, store, 1)
        gone, gone_loc, _ = _register(db, store, 2)
        orphan = store.write(_table(), SPEC, "j7a1-12345678").location
        store.delete(gone_loc)
        report = storage_service.check_store(db, settings, grace_s=0)
        assert [o.location for o in report.orphans] == [orphan]
        assert report.orphans[0].age_s is not None  # S3's LastModified
        assert [b.dataset_id for b in report.missing] == [gone]
        # With an hour of grace the new orphan is only listed.
        assert [o.location for o in storage_service.check_store(db, settings).recent] == [orphan]
        fixed = storage_service.check_store(db, settings, repair=True, grace_s=0)
        assert fixed.unresolved == 0 and not store.exists(orphan)
        assert _state(db, gone) == "MISSING" and _state(db, kept) == "AVAILABLE"
        assert storage_service.check_store(db, settings, grace_s=0).clean
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_exit_codes_json_and_grace(
    db: Database, settings: Settings, env: dict[str, str]
) -> None:
    store = store_at(settings.store_root)
    dataset_id, location, _ = _register(db, store, 1)
    Path(location).unlink()
    orphan = Path(store.write(_table(), SPEC, "j5a1-feedface").location)

    dpct = InProcess(env)  # through dpct.cli.main, the console script's error mapping
    proc = dpct.run("store", "check", "--json", rc=1)
    found = json.loads(proc.stdout)
    assert found["clean"] is False and found["unresolved"] == 1  # the orphan is young
    assert [o["location"] for o in found["recent"]] == [str(orphan)]
    assert [b["dataset_id"] for b in found["missing"]] == [dataset_id]

    proc = dpct.run("store", "check", "--grace", "0", rc=1)
    assert "2 problems left" in proc.stdout, proc.stdout
    assert "store check --repair" in proc.stdout

    bad = dpct.run("store", "check", "--grace", "soon", rc=2)
    assert "--grace" in bad.stderr and "Traceback" not in bad.stderr

    proc = dpct.run("store", "check", "--repair", "--grace", "0s")
    assert "repaired" in proc.stdout and not orphan.exists()
    assert _state(db, dataset_id) == "MISSING"

    proc = dpct.run("store", "check", "--fast")
    assert "clean" in proc.stdout, proc.stdout
