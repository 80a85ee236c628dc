"""The product store on a local folder and on a real S3 server, and retention."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest
from tests.peers import S3

import dpct.testing.tasks  # noqa: F401  (registers testing_counts)
from dpct.datamodel import NS_PER_DAY, DataSpec, data_type
from dpct.errors import SchemaMismatch, UnknownDataType
from dpct.storage import Database, ProductStore, read_product, register_dataset
from dpct.storage import service as storage_service
from dpct.testing import FakeClock

OTHER = data_type("tests_store_other", 1, [("obmt_ns", "int64"), ("value", "float64")])
SPEC = DataSpec("testing_counts", 700 * NS_PER_DAY, 700 * NS_PER_DAY + 3600 * 10**9)


def _table(n: int = 5) -> pa.Table:
    return pa.table({"obmt_ns": list(range(n)), "value": [float(i) for i in range(n)]})


def test_s3_store_round_trip_checksum_and_delete(s3: S3) -> None:
    store = ProductStore(s3.url("dpc"))
    out = store.write(_table(), SPEC, "j1a1")
    name = out.location.rsplit("/", 1)[1]
    assert out.location == s3.url(f"dpc/testing_counts/day=700/{name}")
    raw = s3.fs.cat_file(out.location)
    assert out.checksum == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert out.bytes == len(raw) and store.checksum(out.location) == out.checksum
    values = read_product(out.location, "testing_counts").column("value").to_pylist()
    assert values == [0.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(SchemaMismatch, match="column 'value' is missing"):
        store.write(_table().drop_columns(["value"]), SPEC, "j1a2")
    assert not store.exists(store.location_for(SPEC, "j1a2"))
    assert store.delete(out.location) and not store.exists(out.location)
    assert not store.delete(out.location)


def test_put_moves_a_local_file_whole(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "store")
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(b"x" * 1000)
    location = store.put(staged, SPEC, "t1")
    assert Path(location).read_bytes() == b"x" * 1000 and not staged.exists()
    assert [p.name for p in Path(location).parent.iterdir()] == [Path(location).name]


def _register(db: Database, store: ProductStore, clock: FakeClock, data_type: str, tag: str):
    out = store.write(_table(), SPEC.with_type(data_type), tag)
    with db.write() as conn:
        dataset_id, _ = register_dataset(conn, out, now=clock(), software_version="test")
    return dataset_id, out.location


def test_retention_deletes_only_what_is_due(db: Database, tmp_path: Path, clock: FakeClock) -> None:
    store = ProductStore(tmp_path / "store")
    old = _register(db, store, clock, "testing_counts", "old")
    other = _register(db, store, clock, "tests_store_other", "other")  # no rule: kept
    clock.advance(2.5 * 86400)
    young = _register(db, store, clock, "testing_counts", "young")
    clock.advance(0.6 * 86400)  # old is 3.1 days old, young 0.6

    assert storage_service.prune(db, now=clock()) == []  # no rule: kept forever
    storage_service.set_retention_rule(db, "testing_counts", 3)
    assert storage_service.retention(db) == {"testing_counts": 3.0}
    due = storage_service.prune(db, now=clock(), dry_run=True)
    assert [d.id for d in due] == [old[0]] and Path(old[1]).exists()

    deleted = storage_service.prune(db, now=clock())
    assert [d.id for d in deleted] == [old[0]]
    assert not Path(old[1]).exists() and Path(young[1]).exists()
    assert storage_service.dataset(db, old[0]).state == "DELETED"
    assert storage_service.dataset(db, young[0]).state == "AVAILABLE"
    assert Path(other[1]).exists()
    assert storage_service.prune(db, now=clock()) == []  # idempotent

    with pytest.raises(UnknownDataType, match="no data type 'nope'"):
        storage_service.set_retention_rule(db, "nope", 1)
