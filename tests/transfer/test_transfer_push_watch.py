"""Pushing products out (local folder, S3), pulling over S3, and watching drop folders."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.peers import S3
from tests.transfer.conftest import Site
from tests.transfer.helpers import DeliveryServer, hk_delivery, sha256_hex, store_checksums

from dpct.config import Settings
from dpct.errors import Conflict, NotFound
from dpct.storage import Database, list_transfers
from dpct.transfer import MANIFEST, parse_manifest, poll, pull, push, read_manifest, watch


def _registered(db: Database, settings: Settings, tmp_path: Path, hours: list[int]) -> None:
    hk_delivery(tmp_path / "incoming", "incoming", hours)
    assert pull(db, settings, tmp_path / "incoming").transfer.registered == len(hours)


def test_push_to_a_folder_then_pull_it_elsewhere(
    db: Database, settings: Settings, tmp_path: Path, elsewhere: Site
) -> None:
    _registered(db, settings, tmp_path, [0, 1, 2])
    before = store_checksums(db)
    out = tmp_path / "outbox" / "to-cu3"
    report = push(db, settings, out, data_type="hk")

    assert report.status == "DONE" and report.transfer.direction == "push"
    manifest = read_manifest(out)
    assert manifest.delivery == "to-cu3" and len(manifest.files) == 3
    for entry in manifest.files:
        assert sha256_hex(out / entry.file) == entry.checksum
        assert (out / entry.file).stat().st_size == entry.bytes
    assert {f.status for f in report.files} == {"SENT"}
    assert not (out / f"{MANIFEST}.tmp").exists()
    with pytest.raises(Conflict, match="already holds"):
        push(db, settings, out)
    assert store_checksums(db) == before

    back = pull(elsewhere.db, elsewhere.settings, out)
    assert back.status == "DONE" and back.transfer.registered == 3
    assert sorted(store_checksums(elsewhere.db).values()) == sorted(before.values())


def test_push_selects_by_id_and_refuses_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    _registered(db, settings, tmp_path, [0, 1, 2])
    first = push(db, settings, tmp_path / "a", since_id=2)
    assert [f.dataset_id for f in first.files] == [3]
    second = push(db, settings, tmp_path / "b", dataset_ids=[1, 3])
    assert [f.dataset_id for f in second.files] == [1, 3]
    with pytest.raises(NotFound, match="nothing to push"):
        push(db, settings, tmp_path / "c", since_id=3)


def test_s3_pull_and_push_round_trip(
    db: Database, settings: Settings, tmp_path: Path, s3: S3, elsewhere: Site
) -> None:
    manifest = hk_delivery(tmp_path / "d1", "d1", [0, 1], rows=2_000)
    source = s3.upload(tmp_path / "d1", "in/d1")
    report = pull(db, settings, source, backoff_s=0.01)
    assert report.status == "DONE", report.transfer.message
    assert report.transfer.peer == source
    assert report.wire_bytes == manifest.total_bytes
    assert pull(db, settings, source).transfer.duplicates == 2

    target = s3.url("out/p1")
    pushed = push(db, settings, target, data_type="hk")
    assert pushed.status == "DONE"
    sent = parse_manifest(s3.fs.cat_file(f"{s3.bucket}/out/p1/{MANIFEST}"))
    for entry in sent.files:
        data = s3.fs.cat_file(f"{s3.bucket}/out/p1/{entry.file}")
        assert "sha256:" + hashlib.sha256(data).hexdigest() == entry.checksum
    with pytest.raises(Conflict):
        push(db, settings, target)

    back = pull(elsewhere.db, elsewhere.settings, target)
    assert back.status == "DONE" and back.transfer.registered == 2


def test_s3_truncated_and_missing_files(
    db: Database, settings: Settings, tmp_path: Path, s3: S3
) -> None:
    manifest = hk_delivery(tmp_path / "d1", "d1", [0, 1], rows=2_000)
    source = s3.upload(tmp_path / "d1", "in/d1")
    short, gone = manifest.files
    key = f"{s3.bucket}/in/d1/{short.file}"
    s3.fs.pipe_file(key, s3.fs.cat_file(key)[: short.bytes // 2])
    s3.fs.rm_file(f"{s3.bucket}/in/d1/{gone.file}")
    report = pull(db, settings, source, retries=1, backoff_s=0.01)
    by_name = {f.name: f for f in report.files}
    assert by_name[short.file].status == "QUARANTINED"
    assert by_name[short.file].reason.startswith("truncated")
    assert by_name[gone.file].status == "FAILED" and "does not exist" in by_name[gone.file].reason
    assert report.status == "FAILED"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_watch_an_s3_prefix(db: Database, settings: Settings, tmp_path: Path, s3: S3) -> None:
    hk_delivery(tmp_path / "a", "a", [0])
    hk_delivery(tmp_path / "b", "b", [1])
    s3.upload(tmp_path / "a", "drop/a")
    reports = watch(db, settings, s3.url("drop"), once=True)
    assert [r.delivery for r in reports] == ["a"]
    s3.upload(tmp_path / "b", "drop/b")  # appears after the first listing
    reports = watch(db, settings, s3.url("drop"), once=True)
    assert [(r.delivery, r.transfer.peer) for r in reports] == [("b", s3.url("drop/b"))]


def test_watch_pulls_each_sealed_delivery_once(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    hk_delivery(drop / "2024-001", "2024-001", [0, 1])
    hk_delivery(drop / "2024-002", "2024-002", [2])
    (drop / "2024-003").mkdir()  # being written: no manifest yet
    reports = watch(db, settings, drop, once=True)
    assert [r.delivery for r in reports] == ["2024-001", "2024-002"]
    assert [r.transfer.registered for r in reports] == [2, 1]
    assert watch(db, settings, drop, once=True) == []

    hk_delivery(drop / "2024-003", "2024-003", [3])
    assert [r.delivery for r in poll(db, settings, drop)] == ["2024-003"]
    with db.read() as conn:
        pulls = list_transfers(conn, direction="pull")
    assert len(pulls) == 3  # none while 2024-003 had no manifest


def test_watch_over_http_and_a_running_watcher_stops(
    db: Database, settings: Settings, tmp_path: Path, serve: Callable[..., DeliveryServer]
) -> None:
    drop = tmp_path / "drop"
    hk_delivery(drop / "a", "a", [0])
    hk_delivery(drop / "b b", "b b", [1])
    server = serve(drop)
    seen = []
    stop = threading.Event()

    def on_report(report: object) -> None:
        seen.append(report)
        if len(seen) == 2:
            stop.set()

    thread = threading.Thread(
        target=watch,
        args=(db, settings, server.url),
        kwargs={"every_s": 0.05, "on_report": on_report, "stop": stop},
    )
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert sorted(r.delivery for r in seen) == ["a", "b b"]
    assert all(r.status == "DONE" for r in seen)
    assert watch(db, settings, server.url, once=True) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_pull_list_show(
    db: Database,
    settings: Settings,
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commands in-process (the CLI's own tests cover the process and exit codes)."""
    from typer.testing import CliRunner

    from dpct.cli import app
    from dpct.cli._context import settings as cli_settings
    from dpct.errors import NotFound, TransferError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli_settings.cache_clear()
    runner = CliRunner()
    hk_delivery(tmp_path / "d1", "d1", [0, 1])
    try:
        result = runner.invoke(app, ["transfer", "pull", str(tmp_path / "d1"), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["transfer"]["status"] == "DONE" and len(report["files"]) == 2
        listed = runner.invoke(app, ["transfer", "list"])
        assert listed.exit_code == 0 and "DONE" in listed.stdout
        shown = runner.invoke(app, ["transfer", "show", str(report["transfer"]["id"])])
        assert shown.exit_code == 0 and "REGISTERED" in shown.stdout
        missing = runner.invoke(app, ["transfer", "pull", str(tmp_path / "nothing")])
        assert isinstance(missing.exception, NotFound) and missing.exception.exit_code == 3
        assert "does not exist" in str(missing.exception)
        (tmp_path / "unsealed").mkdir()
        unsealed = runner.invoke(app, ["transfer", "pull", str(tmp_path / "unsealed")])
        assert isinstance(unsealed.exception, TransferError)
        assert "not sealed" in str(unsealed.exception)
        nowhere = runner.invoke(app, ["transfer", "watch", str(tmp_path / "nothing"), "--once"])
        assert isinstance(nowhere.exception, NotFound)
        watched = runner.invoke(app, ["transfer", "watch", str(tmp_path), "--once", "--json"])
        assert watched.exit_code == 0 and json.loads(watched.stdout) == []
    finally:
        cli_settings.cache_clear()
