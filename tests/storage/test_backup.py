"""Backup and restore: a consistent snapshot while nodes write, incremental products,
restore into a new DPCT_HOME with every file checked against the registry.

The restored store is verified independently of the code under test: each registry row's
file must exist under the new root with the row's size and sha256, and no file may lie
in the store without a row.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.helpers import register, wait_for
from tests.peers import S3

from dpct.config import Settings
from dpct.errors import BadInput, Conflict, NotFound, StorageError
from dpct.processing import LocalCluster
from dpct.processing._inline import run_inline
from dpct.storage import Database, delete_product, set_task_limits
from dpct.storage import backup as backup_service
from dpct.storage._admin import drop_postgres_database
from dpct.storage._retention import mark_deleted
from dpct.storage._schema import datasets, events
from dpct.storage.service import check_store
from dpct.testing import POSTGRES_ADMIN_URL, postgres_database
from dpct.workflows import service

DAY = 6100
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
RANK = {"NEW": 0, "RUNNING": 1, **dict.fromkeys(ENDED, 2)}


# ---------------------------------------------------------------- helpers ----------
def dpct(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "dpct", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if ok:
        assert out.returncode == 0, f"dpct {' '.join(args)}: {out.stderr}"
    return out


def dpct_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(dpct(env, *args, "--json").stdout)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_store(url: str, store_root: Path) -> dict[int, str]:
    """Every row's file exists under ``store_root`` with its size and sha256, and every
    file has a row; returns the state of each dataset."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    datasets.c.id,
                    datasets.c.location,
                    datasets.c.bytes,
                    datasets.c.checksum,
                    datasets.c.state,
                )
            ).all()
    finally:
        engine.dispose()
    kept = {}
    for _id, location, nbytes, checksum, state in rows:
        if state == "DELETED":
            continue
        path = Path(location)
        assert path.is_relative_to(store_root), f"dataset {_id} points outside: {location}"
        assert path.is_file(), f"dataset {_id}: no file at {location}"
        assert path.stat().st_size == nbytes, f"dataset {_id}: size"
        assert "sha256:" + sha256(path) == checksum, f"dataset {_id}: checksum"
        kept[location] = _id
    files = {str(p) for p in store_root.rglob("*") if p.is_file()} if store_root.exists() else set()
    assert files == set(kept), f"files without a row: {sorted(files - set(kept))}"
    return {int(i): s for i, _, _, _, s in rows}


def wipe(settings: Settings, db: Database) -> None:
    """Lose the source: its home, products and database."""
    db.dispose()
    shutil.rmtree(settings.home, ignore_errors=True)
    url = sa.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
    else:
        drop_postgres_database(POSTGRES_ADMIN_URL, str(url.database))


def direct_copy_env(
    manifest_dir: Path, tmp_path: Path, kind: str, pg_url: str, base: dict[str, str]
) -> dict[str, str]:
    """An environment that reads the backup's database dump as it is, not through
    ``dpct restore``: the independent view of what the snapshot holds."""
    home = tmp_path / "direct-home"
    if kind == "sqlite":
        copy = tmp_path / "direct.sqlite3"
        shutil.copyfile(manifest_dir / "database.sqlite3", copy)
        return {**base, "DPCT_HOME": str(home), "DPCT_DATABASE_URL": f"sqlite:///{copy}"}
    dump = manifest_dir / "database.pgdump"
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(
        ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq}", str(dump)],
        check=True,
        capture_output=True,
    )
    return {**base, "DPCT_HOME": str(home), "DPCT_DATABASE_URL": pg_url}


def make_datasets(db: Database, settings: Settings, tmp_path: Path, name: str, day: int) -> int:
    register(db, tmp_path, name, [{"name": "m", "task": "testing.make", "partition": "6h"}])
    wf = service.submit(db, name, service.day_spec("testing_counts", day))
    run_inline(db, settings, time.time)
    assert service.workflow(db, wf).workflow.status == "SUCCESS"
    return wf


def _success(db: Database, wf: int, step: str) -> int:
    return sum(
        1 for j in service.jobs(db, wf, page_size=1000) if j.step == step and j.status == "SUCCESS"
    )


def _ended(db: Database, wf: int) -> bool:
    return service.workflow(db, wf).workflow.status in ENDED


def _gate(db: Database, limit: int | None) -> None:
    """Hold (0) or release (None) the `testing.scale` jobs: leasing skips a type at its limit."""
    with db.write() as conn:
        set_task_limits(conn, {"testing.scale": limit})


# ---------------------------------------------------------------- the acceptance --
@pytest.mark.acceptance
@pytest.mark.slow
def test_backup_while_a_node_runs_jobs_then_wipe_and_restore(
    backend: str, db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    # A finished workflow, and a running one of many short jobs whose second step is held
    # back until the backup is done: the snapshot must show it mid-way.
    register(db, tmp_path, "Done", [{"name": "m", "task": "testing.make", "partition": "8h"}])
    done = service.submit(db, "Done", service.day_spec("testing_counts", DAY - 1))
    register(
        db,
        tmp_path,
        "Busy",
        [
            {"name": "m", "task": "testing.make", "partition": "2h", "params": {"seconds": 0.2}},
            {"name": "s", "task": "testing.scale", "partition": "2h", "depends_on": ["m"]},
        ],
    )
    _gate(db, 0)
    busy = service.submit(db, "Busy", service.day_spec("testing_counts", DAY))
    dest = tmp_path / "backups"
    with LocalCluster(env, nodes=1, slots=2, log_dir=tmp_path / "procs"):
        wait_for(lambda: _ended(db, done), timeout=120, what="the first workflow")
        wait_for(lambda: _success(db, busy, "m") >= 3, timeout=120, what="jobs running")
        first = dpct_json(env, "backup", str(dest))
        _gate(db, None)
        wait_for(lambda: _ended(db, busy), timeout=300, what="the busy workflow's end")
    source_workflows = dpct_json(env, "workflow", "list", "-n", "1000")
    source_datasets = dpct_json(env, "datasets", "-n", "1000")
    second = dpct_json(env, "backup", str(dest))

    # Incremental: the second backup copies exactly the contents the first lacked.
    snap1 = dest / first["id"]
    m1 = json.loads((snap1 / "manifest.json").read_text())
    m2 = json.loads((dest / second["id"] / "manifest.json").read_text())
    shas1 = {f["sha256"] for f in m1["files"]}
    shas2 = {f["sha256"] for f in m2["files"]}
    assert first["missing"] == [] and second["missing"] == []
    assert first["copied"] == len(shas1) and first["files"] == len(m1["files"])
    assert second["files"] == len(source_datasets)
    assert second["copied"] == len(shas2 - shas1) >= 12  # at least every `s` output
    assert second["reused"] == second["files"] - second["copied"]
    objects = [p for p in (dest / "objects").rglob("*") if p.is_file()]
    assert len(objects) == len(shas1 | shas2)
    listed = dpct_json(env, "backup", "list", str(dest))
    assert [(b["id"], b["complete"]) for b in listed] == [
        (first["id"], True),
        (second["id"], True),
    ]

    # Wipe the source, restore the first backup into a new home (and a new database).
    wipe(settings, db)
    new_home = tmp_path / "restored"
    with postgres_database() if backend == "postgresql" else _nothing() as pg_url:
        restore_args = ["restore", str(snap1), "--home", str(new_home)]
        if pg_url:
            restore_args += ["--database-url", pg_url]
        restored = dpct_json(env, *restore_args)
        assert restored["lost"] == [] and restored["files"] == len(m1["files"])
        renv = {**env, "DPCT_HOME": str(new_home), "DPCT_DATABASE_URL": pg_url or ""}
        restored_url = pg_url or f"sqlite:///{new_home / 'dpct.sqlite3'}"
        states = verify_store(restored_url, new_home / "products")
        assert len(states) == len(m1["files"])
        checked = dpct_json(renv, "store", "check", "--grace", "0")
        assert checked["clean"], checked

        restored_workflows = dpct_json(renv, "workflow", "list", "-n", "1000")
        restored_datasets = dpct_json(renv, "datasets", "-n", "1000")

        # 1. The restored listing is the snapshot's, read from the dump directly.
        with postgres_database() if backend == "postgresql" else _nothing() as direct_url:
            denv = direct_copy_env(snap1, tmp_path, m1["database"]["kind"], direct_url, env)
            assert dpct_json(denv, "workflow", "list", "-n", "1000") == restored_workflows
            direct_datasets = dpct_json(denv, "datasets", "-n", "1000")
        old_root, new_root = m1["store_root"], str(new_home / "products")
        assert [
            {**d, "location": new_root + d["location"][len(old_root) :]} for d in direct_datasets
        ] == restored_datasets

        # 2. The snapshot is a true earlier state of the source: every workflow and dataset
        #    it holds exists there, unchanged or further along, and the busy workflow was
        #    caught mid-way (its held step ran only after the backup).
        source = {v["workflow"]["id"]: v for v in source_workflows}
        for view in restored_workflows:
            w, later = view["workflow"], source[view["workflow"]["id"]]["workflow"]
            same = ("name", "persistence_id", "spec", "n_jobs", "trigger", "created_at")
            assert {k: w[k] for k in same} == {k: later[k] for k in same}
            assert RANK[w["status"]] <= RANK[later["status"]]
            if w["status"] in ENDED:
                assert w == later
            assert view["counts"].get("SUCCESS", 0) <= source[w["id"]]["counts"].get("SUCCESS", 0)
        by_id = {v["workflow"]["id"]: v for v in restored_workflows}
        assert by_id[done]["workflow"]["status"] == "SUCCESS"
        assert by_id[busy]["workflow"]["status"] == "RUNNING"
        assert by_id[busy]["counts"].get("SUCCESS", 0) < source[busy]["counts"]["SUCCESS"]
        source_sets = {d["id"]: d for d in source_datasets}
        for d in restored_datasets:
            assert {k: v for k, v in d.items() if k != "location"} == {
                k: v for k, v in source_sets[d["id"]].items() if k != "location"
            }
        assert len(restored_datasets) < len(source_datasets)

        # 3. The restored system carries on: the held step runs on the restored products
        #    (the old store is gone, so this reads the rewritten locations), and the jobs
        #    that were running at the snapshot are retried once their leases expire.
        rdb = Database(restored_url)
        try:
            _gate(rdb, None)
            with LocalCluster(renv, nodes=0, log_dir=tmp_path / "procs-restored") as cluster:
                cluster.start_node("pfs.restored", slots=2)
                wait_for(lambda: _ended(rdb, busy), timeout=300, what="restored workflow end")
            jobs = service.jobs(rdb, busy, page_size=1000)
            assert {j.status for j in jobs} == {"SUCCESS"}
        finally:
            rdb.dispose()
        verify_store(restored_url, new_home / "products")


class _nothing:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *_: object) -> None:
        return None


# ---------------------------------------------------------------- consistency -----
def test_files_gone_after_the_snapshot_are_reported_and_restored_as_deleted(
    backend: str, db: Database, settings: Settings, tmp_path: Path
) -> None:
    make_datasets(db, settings, tmp_path, "Four", DAY)
    with db.read() as conn:
        rows = conn.execute(sa.select(datasets).order_by(datasets.c.id)).all()
    assert len(rows) == 4
    corrupt, damaged, pruned, kept = rows
    Path(corrupt.location).write_bytes(b"not the registered bytes")

    run = backup_service.Backup(db, settings, str(tmp_path / "dest"))
    run.snapshot()
    # After the snapshot: a file vanishes from the store behind the registry's back, and
    # one is deleted the way retention does it (row DELETED first, then the file).
    Path(damaged.location).unlink()
    with db.write() as conn:
        mark_deleted(conn, [pruned.id], time.time(), "retention", from_state="AVAILABLE")
    delete_product(pruned.location)
    run.copy_products()
    result = run.seal()

    assert result.files == 1 and result.copied == 1
    why = {m.dataset_id: m.reason for m in result.missing}
    assert sorted(why) == [corrupt.id, damaged.id, pruned.id]
    assert "hash to" in why[corrupt.id]
    assert "damaged" in why[damaged.id]
    assert "deleted after the snapshot" in why[pruned.id]

    db.dispose()
    with postgres_database() if backend == "postgresql" else _nothing() as pg_url:
        new_home = tmp_path / "restored"
        out = backup_service.restore(result.url, new_home, database_url=pg_url)
        assert out.files == 1 and {m.dataset_id for m in out.lost} == set(why)
        url = pg_url or f"sqlite:///{new_home / 'dpct.sqlite3'}"
        states = verify_store(url, new_home / "products")
        restored = Settings(home=new_home, database_url=url)
        restored_db = Database(url)
        try:
            assert check_store(restored_db, restored, grace_s=0).clean
        finally:
            restored_db.dispose()
        assert states == {
            corrupt.id: "DELETED",
            damaged.id: "DELETED",
            pruned.id: "DELETED",
            kept.id: "AVAILABLE",
        }
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                said = conn.execute(
                    sa.select(events.c.object_id, events.c.message).where(
                        events.c.kind == "dataset.deleted"
                    )
                ).all()
        finally:
            engine.dispose()
        assert sorted(int(i) for i, _ in said) == sorted(why)
        assert all(f"backup {result.id}" in message for _, message in said)


def test_interrupted_backup_is_incomplete_and_cannot_be_restored(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_datasets(db, settings, tmp_path, "Few", DAY)
    dest = tmp_path / "dest"
    good = backup_service.backup(db, settings, str(dest))

    def crash(*_: object) -> None:
        raise KeyboardInterrupt  # the process dies before its last file

    monkeypatch.setattr("dpct.storage.backup.write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        backup_service.backup(db, settings, str(dest))
    monkeypatch.undo()
    listed = backup_service.list_backups(str(dest))
    assert [(b.complete, b.files) for b in listed] == [(True, 4), (False, 0)]
    assert listed[0].id == good.id
    with pytest.raises(NotFound, match="not a complete backup"):
        backup_service.restore(listed[1].url, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(BadInput, match="inside the product store"):
        backup_service.backup(db, settings, str(settings.products_dir / "backups"))


def test_restore_refuses_a_used_target_and_checks_every_byte(
    backend: str, db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    make_datasets(db, settings, tmp_path, "Few", DAY)
    result = backup_service.backup(db, settings, str(tmp_path / "dest"))
    manifest = json.loads((Path(result.url) / "manifest.json").read_text())

    out = dpct(env, "restore", result.url, "--home", str(settings.home), ok=False)
    assert out.returncode == 4 and "is not empty" in out.stderr
    assert "Traceback" not in out.stderr
    if backend == "sqlite":
        with pytest.raises(BadInput, match="SQLite backup"):
            backup_service.restore(
                result.url, tmp_path / "a", database_url="postgresql://x@localhost/y"
            )
    else:
        with pytest.raises(BadInput, match="--database-url"):
            backup_service.restore(result.url, tmp_path / "a")
        with pytest.raises(Conflict, match="not empty"):
            backup_service.restore(result.url, tmp_path / "b", database_url=settings.database_url)
        assert not (tmp_path / "b").exists()

    # One object rots in the backup: the restore finds it by its sha256, keeps the row
    # (marked DELETED) and restores the rest.
    victim = manifest["files"][0]
    obj = tmp_path / "dest" / "objects" / "sha256" / victim["sha256"][:2] / victim["sha256"][2:]
    obj.write_bytes(obj.read_bytes()[:-1] + b"!")
    with postgres_database() if backend == "postgresql" else _nothing() as pg_url:
        new_home = tmp_path / "new"
        out_ = backup_service.restore(result.url, new_home, database_url=pg_url)
        assert [m.dataset_id for m in out_.lost] == [victim["dataset_id"]]
        assert "corrupt" in out_.lost[0].reason and out_.files == 3
        states = verify_store(
            pg_url or f"sqlite:///{new_home / 'dpct.sqlite3'}", new_home / "products"
        )
        assert states[victim["dataset_id"]] == "DELETED"

    # A damaged database dump stops the restore before anything is used.
    dump = Path(result.url) / manifest["database"]["file"]
    dump.write_bytes(dump.read_bytes() + b"x")
    empty = postgres_database() if backend == "postgresql" else _nothing()
    with empty as empty_url, pytest.raises(StorageError, match=r"dump .* is corrupt"):
        backup_service.restore(result.url, tmp_path / "c", database_url=empty_url)
    assert not (tmp_path / "c").exists()  # a failed restore leaves no home behind


@pytest.mark.slow  # seven `dpct` processes against an S3 server
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backup_to_s3_is_incremental_and_restores(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path, s3: S3
) -> None:
    make_datasets(db, settings, tmp_path, "First", DAY)
    dest = s3.url("backups")
    first = dpct_json(env, "backup", dest)
    assert first["files"] == first["copied"] == 4
    make_datasets(db, settings, tmp_path, "Second", DAY + 1)
    second = dpct_json(env, "backup", dest)
    assert (second["files"], second["copied"], second["reused"]) == (8, 4, 4)
    assert len(s3.fs.find(f"{s3.bucket}/backups/objects")) == 8
    listed = dpct_json(env, "backup", "list", dest)
    assert [(b["id"], b["complete"]) for b in listed] == [
        (first["id"], True),
        (second["id"], True),
    ]
    source_datasets = dpct_json(env, "datasets", "-n", "100")
    source_workflows = dpct_json(env, "workflow", "list")

    wipe(settings, db)
    new_home = tmp_path / "restored"
    restored = dpct_json(env, "restore", second["url"], "--home", str(new_home))
    assert restored["files"] == 8 and restored["lost"] == []
    verify_store(f"sqlite:///{new_home / 'dpct.sqlite3'}", new_home / "products")
    renv = {**env, "DPCT_HOME": str(new_home), "DPCT_DATABASE_URL": ""}
    assert dpct_json(renv, "workflow", "list") == source_workflows
    old_root, new_root = str(settings.products_dir), str(new_home / "products")
    assert dpct_json(renv, "datasets", "-n", "100") == [
        {**d, "location": new_root + d["location"][len(old_root) :]} for d in source_datasets
    ]


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_backup_without_pg_dump_says_what_to_install(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(StorageError, match="pg_dump is not installed; install the PostgreSQL"):
        backup_service.backup(db, settings, str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_restore_into_an_object_store_and_files_from_an_older_store_root(
    db: Database, settings: Settings, tmp_path: Path, s3: S3
) -> None:
    make_datasets(db, settings, tmp_path, "Old", DAY)
    # The store moved since these files were registered: they lie outside the new root.
    moved = settings.model_copy(update={"store_url": str(tmp_path / "new-store")})
    result = backup_service.backup(db, moved, str(tmp_path / "dest"))
    manifest = json.loads((Path(result.url) / "manifest.json").read_text())
    assert all(f["path"].startswith("_outside/") for f in manifest["files"])

    home = tmp_path / "restored"
    out = backup_service.restore(result.url, home, store_url=s3.url("store"))
    assert out.files == 4 and out.lost == [] and out.store_root == s3.url("store")
    engine = sa.create_engine(f"sqlite:///{home / 'dpct.sqlite3'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(datasets.c.location, datasets.c.checksum)).all()
    engine.dispose()
    assert len(rows) == 4
    for location, checksum in rows:
        assert location.startswith(s3.url("store/_outside/"))
        data = s3.fs.cat_file(location.removeprefix("s3://"))
        assert "sha256:" + hashlib.sha256(data).hexdigest() == checksum
    with pytest.raises(Conflict, match="is not empty"):
        backup_service.restore(result.url, tmp_path / "again", store_url=s3.url("store"))
