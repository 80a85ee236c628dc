"""Pulling deliveries: resumed over HTTP, verified, quarantined, idempotent, triggering.

Peers are real: an HTTP server in a thread that cuts connections, and delivery folders
on disk with damaged files. Every test also checks that no stored product changed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.helpers import register
from tests.transfer.helpers import (
    DeliveryServer,
    flip_bytes,
    hk_delivery,
    hk_spec,
    hk_table,
    sha256_hex,
    store_checksums,
    truncate,
)

from dpct.config import Settings
from dpct.events import service as event_service
from dpct.storage import Database, ProductStore, get_dataset, list_datasets
from dpct.testing import FakeClock
from dpct.transfer import (
    MANIFEST,
    DeliveryWriter,
    ManifestEntry,
    SpecModel,
    pull,
    read_manifest,
    transfer,
)
from dpct.transfer._staging import staging_root
from dpct.workflows import fire_data_triggers


def _datasets(db: Database) -> int:
    with db.read() as conn:
        return len(list_datasets(conn, limit=100_000))


def test_http_pull_resumes_a_cut_download_with_range(
    db: Database, settings: Settings, tmp_path: Path, serve: Callable[..., DeliveryServer]
) -> None:
    manifest = hk_delivery(tmp_path / "peer" / "d1", "d1", range(3), rows=20_000)
    big = manifest.files[0]
    served = f"d1/{big.file}"
    server = serve(tmp_path / "peer", cut={served})
    report = pull(db, settings, f"{server.url}/d1", workers=2, backoff_s=0.01)

    assert report.status == "DONE", report.transfer.message
    assert [f.status for f in report.files] == ["REGISTERED"] * 3
    ranges = server.ranges(served)
    assert ranges[0] is None and len(ranges) == 2
    resumed_from = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from < big.bytes
    assert server.sent[served] < 1.1 * big.bytes
    assert report.wire_bytes == manifest.total_bytes
    with db.read() as conn:
        for row in report.files:
            dataset = get_dataset(conn, row.dataset_id)
            assert dataset is not None and dataset.transfer_id == report.id
            assert ProductStore(settings.store_root).checksum(dataset.location) == row.checksum
    assert not (settings.home / "transfer" / "staging").exists() or not any(
        (settings.home / "transfer" / "staging").iterdir()
    )


def test_http_pull_starts_over_when_the_server_ignores_range(
    db: Database, settings: Settings, tmp_path: Path, serve: Callable[..., DeliveryServer]
) -> None:
    manifest = hk_delivery(tmp_path / "peer" / "d1", "d1", [0], rows=20_000)
    served = f"d1/{manifest.files[0].file}"
    server = serve(tmp_path / "peer", cut={served}, honour_range=False)
    report = pull(db, settings, f"{server.url}/d1", backoff_s=0.01)
    assert report.status == "DONE", report.transfer.message
    assert server.ranges(served)[1] is not None  # asked to resume, was sent it all
    assert report.files[0].status == "REGISTERED"


def test_gives_up_after_retries_and_resumes_on_the_next_pull(
    db: Database, settings: Settings, tmp_path: Path, serve: Callable[..., DeliveryServer]
) -> None:
    manifest = hk_delivery(tmp_path / "peer" / "d1", "d1", [0], rows=20_000)
    served = f"d1/{manifest.files[0].file}"
    server = serve(tmp_path / "peer", cut={served})
    first = pull(db, settings, f"{server.url}/d1", retries=0, backoff_s=0.01)
    assert first.status == "FAILED"
    assert first.files[0].status == "FAILED" and "gave up after 1 attempts" in first.files[0].reason
    assert _datasets(db) == 0

    second = pull(db, settings, f"{server.url}/d1", retries=0)
    assert second.status == "DONE"
    assert server.ranges(served)[1].startswith("bytes=")  # resumed from staging
    assert server.sent[served] < 1.1 * manifest.files[0].bytes
    kinds = [e.kind for e in event_service.events(db, object_type="transfer", limit=10)]
    assert "transfer.failed" in kinds and "transfer.finished" in kinds


def _bad_delivery(folder: Path, registered_file: Path, registered: ManifestEntry) -> None:
    """Good, corrupted, truncated, duplicate, wrong-schema, unknown-type, unreadable files."""
    writer = DeliveryWriter(folder, "bad")
    for hour in range(10, 13):
        writer.add_table(hk_table(hk_spec(hour).start_ns, 300, seed=hour), hk_spec(hour))
    # The same bytes as a dataset registered earlier, under another name.
    (folder / "hk" / "again.parquet").write_bytes(registered_file.read_bytes())
    writer.entries.append(registered.model_copy(update={"file": "hk/again.parquet"}))
    # A column of the wrong name: the hk type is known, the schema is not its.
    wrong = hk_table(hk_spec(20).start_ns, 50).rename_columns(
        ["obmt_ns", "fpa_temp_k", "payload_temp_k", "bam_bench_temp_k", "bus_voltage_v", "volts"]
    )
    pq.write_table(wrong, folder / "hk" / "wrong.parquet")
    writer.add_file("hk/wrong.parquet", hk_spec(20), rows=50)
    # A type nobody registered.
    pq.write_table(pa.table({"x": [1, 2, 3]}), folder / "mystery.parquet")
    writer.entries.append(
        ManifestEntry(
            file="mystery.parquet",
            bytes=(folder / "mystery.parquet").stat().st_size,
            checksum=sha256_hex(folder / "mystery.parquet"),
            data_type="mystery_type",
            type_version=1,
            spec=SpecModel(data_type="mystery_type", start_ns=0, end_ns=10),
            rows=3,
        )
    )
    # Not Parquet at all, though listed as hk.
    (folder / "hk" / "text.parquet").write_text("this is not a parquet file\n" * 40)
    writer.add_file("hk/text.parquet", hk_spec(22), rows=10)
    manifest = writer.seal()
    corrupt, short = manifest.files[0].file, manifest.files[1].file
    flip_bytes(folder / corrupt)
    truncate(folder / short, manifest.files[1].bytes // 2)


def test_bad_files_are_quarantined_and_the_store_is_untouched(
    db: Database, settings: Settings, tmp_path: Path, serve: Callable[..., DeliveryServer]
) -> None:
    first = hk_delivery(tmp_path / "peer" / "d0", "d0", [0, 1], rows=300)
    assert pull(db, settings, tmp_path / "peer" / "d0").status == "DONE"
    before = store_checksums(db)
    assert len(before) == 2

    known = first.files[0]
    _bad_delivery(tmp_path / "peer" / "bad", tmp_path / "peer" / "d0" / known.file, known)
    server = serve(tmp_path / "peer")
    report = pull(db, settings, f"{server.url}/bad", backoff_s=0.01)

    assert report.status == "PARTIAL"
    by_name = {f.name: f for f in report.files}
    manifest = read_manifest(tmp_path / "peer" / "bad")
    corrupt, short, good = (f.file for f in manifest.files[:3])
    expected = {
        corrupt: ("QUARANTINED", "checksum mismatch"),
        short: ("QUARANTINED", "truncated"),
        good: ("REGISTERED", ""),
        "hk/again.parquet": ("DUPLICATE", "already registered as dataset"),
        "hk/wrong.parquet": ("QUARANTINED", "wrong schema"),
        "mystery.parquet": ("QUARANTINED", "unknown data type"),
        "hk/text.parquet": ("QUARANTINED", "unreadable"),
    }
    assert set(by_name) == set(expected)
    for name, (status, reason) in expected.items():
        assert by_name[name].status == status, (name, by_name[name].reason)
        assert by_name[name].reason.startswith(reason), (name, by_name[name].reason)
    assert "ccd_clock_voltage_v" in by_name["hk/wrong.parquet"].reason
    assert "mystery_type" in by_name["mystery.parquet"].reason
    assert before[by_name["hk/again.parquet"].dataset_id] == known.checksum
    t = report.transfer
    assert (t.files, t.registered, t.duplicates, t.quarantined) == (7, 1, 1, 5)

    # Quarantine: each bad file beside its reason; events name file and reason.
    folder = settings.home / "transfer" / "quarantine" / str(report.id)
    for name, (status, reason) in expected.items():
        if status == "QUARANTINED":
            assert (folder / name).is_file()
            assert by_name[name].location == str(folder / name)
            assert reason in (folder / f"{name}.reason").read_text()
    events = event_service.events(db, object_type="transfer", object_id=str(report.id))
    quarantined = {e.message.split(":", 1)[0] for e in events if e.kind == "transfer.quarantined"}
    assert quarantined == {n for n, (s, _) in expected.items() if s == "QUARANTINED"}
    assert any(e.kind == "transfer.duplicate" for e in events)

    after = store_checksums(db)
    assert {k: after[k] for k in before} == before
    assert len(after) == 3
    view = transfer(db, report.id)
    assert [f.name for f in view.files] == [f.name for f in report.files]


def test_pulling_the_same_delivery_again_registers_nothing(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    hk_delivery(tmp_path / "d1", "d1", range(4))
    first = pull(db, settings, tmp_path / "d1")
    assert first.transfer.registered == 4
    before = store_checksums(db)

    again = pull(db, settings, tmp_path / "d1")
    assert again.status == "DONE" and again.id != first.id
    assert [f.status for f in again.files] == ["DUPLICATE"] * 4
    assert again.wire_bytes == 0  # known checksums are not even downloaded
    assert (again.transfer.registered, again.transfer.duplicates) == (0, 4)
    assert store_checksums(db) == before


def test_a_delivery_without_manifest_fails_cleanly(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "half").mkdir()
    report = pull(db, settings, tmp_path / "half")
    assert report.status == "FAILED" and "not sealed" in report.transfer.message
    (tmp_path / "half" / MANIFEST).write_text('{"format": "dpct-delivery/1"}')
    report = pull(db, settings, tmp_path / "half")
    assert report.status == "FAILED" and "delivery" in report.transfer.message


def test_pulled_hk_starts_a_data_triggered_workflow_with_the_transfer_id(
    db: Database, settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    register(
        db,
        tmp_path,
        "OnHk",
        [{"name": "look", "task": "testing.noop"}],
        data_type="hk",
        trigger={"kind": "data", "data_type": "hk", "mode": "dataset"},
    )
    hk_delivery(tmp_path / "d1", "d1", [0, 1])
    report = pull(db, settings, tmp_path / "d1", clock=clock)
    started = fire_data_triggers(db, clock())
    assert len(started) == 2
    view = transfer(db, report.id)
    assert sorted(w.id for w in view.workflows) == sorted(started)
    assert {w.transfer_id for w in view.workflows} == {report.id}
    assert {w.name for w in view.workflows} == {"OnHk"}


def test_copy_of_a_delivery_folder_resumes_from_local_staging(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """A partial staging file (a pull killed mid-file) is adopted and completed."""
    manifest = hk_delivery(tmp_path / "d1", "d1", [0], rows=5_000)
    entry = manifest.files[0]
    staging = staging_root(settings) / "77"  # a transfer that is gone
    staging.mkdir(parents=True)
    part = staging / f"{entry.checksum.removeprefix('sha256:')}.hk.part"
    shutil.copyfile(tmp_path / "d1" / entry.file, part)
    truncate(part, entry.bytes // 3)
    report = pull(db, settings, tmp_path / "d1")
    assert report.status == "DONE"
    assert report.wire_bytes == entry.bytes - entry.bytes // 3
    assert not staging.exists()  # adopted, and its emptied folder removed


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_unknown_scheme_is_bad_input(db: Database, settings: Settings) -> None:
    from dpct.errors import BadInput

    with pytest.raises(BadInput, match="cannot pull"):
        pull(db, settings, "ftp://example.org/x")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cli_pull_exit_codes_tell_partial_from_failed(
    db: Database,
    settings: Settings,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from dpct.cli import app
    from dpct.cli._context import settings as cli_settings
    from dpct.errors import PartialTransfer, TransferError

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli_settings.cache_clear()
    manifest = hk_delivery(tmp_path / "d1", "d1", [0, 1])
    flip_bytes(tmp_path / "d1" / manifest.files[0].file)
    (tmp_path / "unsealed").mkdir()
    runner = CliRunner()
    try:
        partial = runner.invoke(app, ["transfer", "pull", str(tmp_path / "d1")])
        assert isinstance(partial.exception, PartialTransfer)
        assert partial.exception.exit_code == 6 and "PARTIAL" in str(partial.exception)
        failed = runner.invoke(app, ["transfer", "pull", str(tmp_path / "unsealed")])
        assert type(failed.exception) is TransferError and failed.exception.exit_code == 1
    finally:
        cli_settings.cache_clear()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("first_is_bad", [False, True])
def test_the_same_bytes_twice_in_a_delivery_are_registered_once(
    first_is_bad: bool, db: Database, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "twice"
    writer = DeliveryWriter(folder, "twice")
    writer.add_table(hk_table(hk_spec(0).start_ns, 300), hk_spec(0))
    entry = writer.entries[-1]
    shutil.copyfile(folder / entry.file, folder / "hk" / "copy.parquet")
    writer.entries.append(entry.model_copy(update={"file": "hk/copy.parquet"}))
    writer.seal()
    if first_is_bad:
        flip_bytes(folder / entry.file)
    report = pull(db, settings, folder)
    status = {f.name: f.status for f in report.files}
    if first_is_bad:
        assert status == {entry.file: "QUARANTINED", "hk/copy.parquet": "REGISTERED"}
    else:
        assert status == {entry.file: "REGISTERED", "hk/copy.parquet": "DUPLICATE"}
    assert _datasets(db) == 1
    assert set(store_checksums(db).values()) == {entry.checksum}
