"""Pulls that race and pulls that die: real processes running the ``dpct`` CLI.

Two pulls of one delivery at once (an operator's pull while a watcher runs) must
register every file exactly once, with bytes that match the registry; a pull killed
mid-delivery must leave nothing behind that the next pull does not clean up. Nothing
here depends on timing: the racing processes are released together by a gate file,
and the kill waits for what it needs to have happened (files moved into the store).
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.transfer.helpers import DeliveryServer, hk_delivery, hk_spec, hk_table

from dpct.config import Settings
from dpct.storage import Database, list_datasets, list_transfers
from dpct.transfer import DeliveryWriter, Manifest, pull
from dpct.transfer._staging import staging_root

ROUNDS = 20

# Imports first (the slow part), then one `dpct transfer pull` per gate file, so that
# both processes enter each pull within milliseconds of each other.
_DRIVER = """
import sys, time, traceback
from pathlib import Path
work, me, sources = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
from dpct.cli import main
(work / f"ready-{me}").touch()
for i, source in enumerate(sources):
    while not (work / f"go-{i}").exists():
        time.sleep(0.002)
    sys.argv = ["dpct", "transfer", "pull", source]
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    (work / f"done-{i}-{me}").write_text(str(code))
"""


def _child_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "COLUMNS": "300"}


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _store_files(settings: Settings) -> set[str]:
    root = Path(settings.store_root)
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def _assert_store_matches_registry(
    db: Database, settings: Settings, manifests: list[Manifest]
) -> None:
    """Each delivered file registered once, its bytes as registered; no other file."""
    with db.read() as conn:
        datasets = list_datasets(conn, limit=100_000)
    by_checksum: dict[str, list[int]] = {}
    for d in datasets:
        by_checksum.setdefault(d.checksum, []).append(d.id)
        path = Path(d.location)
        assert path.stat().st_size == d.bytes, f"dataset {d.id}: size differs from registry"
        assert _sha256(path) == d.checksum, f"dataset {d.id}: bytes differ from registry"
    expected = {e.checksum for m in manifests for e in m.files}
    assert set(by_checksum) == expected
    twice = {c: ids for c, ids in by_checksum.items() if len(ids) != 1}
    assert not twice, f"registered more than once: {twice}"
    assert _store_files(settings) == {d.location for d in datasets}, "unregistered store files"


def _small_deliveries(folder: Path, n: int) -> list[Manifest]:
    return [
        hk_delivery(folder / f"d{i}", f"d{i}", [3 * i, 3 * i + 1, 3 * i + 2], seed=i)
        for i in range(n)
    ]


@pytest.mark.slow  # real `dpct transfer pull` processes
@pytest.mark.parametrize("over", ["local", "http"])
def test_two_pulls_of_one_delivery_at_once_register_each_file_once(
    over: str,
    db: Database,
    settings: Settings,
    env: dict[str, str],
    tmp_path: Path,
    serve: Callable[..., DeliveryServer],
) -> None:
    manifests = _small_deliveries(tmp_path / "peer", ROUNDS)
    if over == "http":
        base = serve(tmp_path / "peer").url
        sources = [f"{base}/d{i}" for i in range(ROUNDS)]
    else:
        sources = [str(tmp_path / "peer" / f"d{i}") for i in range(ROUNDS)]
    work = tmp_path / "race"
    work.mkdir()
    procs = {
        me: subprocess.Popen(
            [sys.executable, "-c", _DRIVER, str(work), me, *sources],
            env=_child_env(env),
            stdout=open(work / f"{me}.out", "w"),  # noqa: SIM115 - closed with the process
            stderr=open(work / f"{me}.err", "w"),  # noqa: SIM115
        )
        for me in ("a", "b")
    }
    try:
        _wait_for(lambda: all((work / f"ready-{me}").exists() for me in procs), "start-up")
        for i in range(ROUNDS):
            (work / f"go-{i}").touch()
            _wait_for(
                lambda i=i: (
                    all((work / f"done-{i}-{me}").exists() for me in procs)
                    or any(p.poll() is not None for p in procs.values())
                ),
                f"round {i}",
            )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.wait(timeout=300)
    errors = {me: (work / f"{me}.err").read_text() for me in procs}
    for me, text in errors.items():
        assert "Traceback" not in text, f"process {me}:\n{text}"
    codes = {(i, me): (work / f"done-{i}-{me}").read_text() for i in range(ROUNDS) for me in procs}
    assert set(codes.values()) == {"0"}, (codes, errors)
    with db.read() as conn:
        transfers = list_transfers(conn, direction="pull", limit=1000)
    assert len(transfers) == 2 * ROUNDS
    assert {t.status for t in transfers} == {"DONE"}
    for source in sources:
        mine = [t for t in transfers if t.peer == source.rstrip("/")]
        assert sorted(t.registered for t in mine) == [0, 3], [t.message for t in mine]
        assert sorted(t.duplicates for t in mine) == [0, 3]
    _assert_store_matches_registry(db, settings, manifests)
    staging = staging_root(settings)
    assert not staging.exists() or not any(staging.iterdir())


def _held_delivery(folder: Path) -> tuple[Manifest, str]:
    """Two small files and a large one whose name sorts first (so it is fetched first)."""
    writer = DeliveryWriter(folder, "slow")
    writer.add_table(hk_table(hk_spec(0).start_ns, 150_000, seed=1), hk_spec(0))
    for hour in (1, 2):
        writer.add_table(hk_table(hk_spec(hour).start_ns, 200, seed=hour), hk_spec(hour))
    manifest = writer.seal()
    big = max(manifest.files, key=lambda e: e.bytes)
    return manifest, big.file


@pytest.mark.slow  # real `dpct transfer pull` processes
def test_a_killed_pull_is_failed_and_the_next_one_cleans_up_and_resumes(
    db: Database,
    settings: Settings,
    env: dict[str, str],
    tmp_path: Path,
    serve: Callable[..., DeliveryServer],
) -> None:
    manifest, big = _held_delivery(tmp_path / "peer" / "slow")
    server = serve(tmp_path / "peer", hold={f"slow/{big}"})
    source = f"{server.url}/slow"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dpct", "transfer", "pull", source, "--workers", "3"],
        env=_child_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The two small files verified and moved into the store, the large one half
        # fetched and held by the server: the moment defect 2 left orphans behind.
        _wait_for(lambda: len(_store_files(settings)) == 2, "two files in the store")
        staging = staging_root(settings)
        _wait_for(
            lambda: any(p.is_file() and p.stat().st_size > 0 for p in staging.rglob("*")),
            "a partial file",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = list_transfers_of(db, source)
    assert [t.status for t in killed] == ["RUNNING"]
    server.release()

    report = pull(db, settings, source, backoff_s=0.01)

    assert report.status == "DONE", report.transfer.message
    assert sorted(f.status for f in report.files) == ["REGISTERED"] * 3
    old = list_transfers_of(db, source)[0]
    assert old.id == killed[0].id and old.status == "FAILED"
    assert "is gone" in old.message
    _assert_store_matches_registry(db, settings, [manifest])
    # The half-fetched file was adopted from the dead pull's staging and resumed.
    ranges = server.ranges(f"slow/{big}")
    assert ranges[0] is None and ranges[-1] is not None and ranges[-1] != "bytes=0-"
    staging = staging_root(settings)
    assert not staging.exists() or not any(staging.iterdir())


def list_transfers_of(db: Database, peer: str) -> list:
    with db.read() as conn:
        return sorted(list_transfers(conn, peer=peer), key=lambda t: t.id)


def _limit_file_size(nbytes: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG

    return limit


@pytest.mark.slow  # real `dpct transfer pull` processes
def test_a_pull_that_cannot_write_fails_in_one_line_and_resumes_later(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """The disk 'fills' under a real limit: RLIMIT_FSIZE makes writes past 3 MB fail."""
    manifest, big = _held_delivery(tmp_path / "slow")
    proc = subprocess.run(
        [sys.executable, "-m", "dpct", "transfer", "pull", str(tmp_path / "slow")],
        env=_child_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(3 << 20),
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "FAILED" in error[0] and "File too large" in error[0], proc.stderr
    (first,) = list_transfers_of(db, str(tmp_path / "slow"))
    assert first.status == "FAILED" and "cannot write under" in first.message
    with db.read() as conn:
        assert {d.checksum for d in list_datasets(conn)} == {
            e.checksum for e in manifest.files if e.file != big
        }
    _assert_store_matches_registry_subset(db, settings)

    again = pull(db, settings, tmp_path / "slow")
    assert again.status == "DONE", again.transfer.message
    big_bytes = next(e.bytes for e in manifest.files if e.file == big)
    assert again.wire_bytes < big_bytes  # resumed from what the first pull wrote
    _assert_store_matches_registry(db, settings, [manifest])


def _assert_store_matches_registry_subset(db: Database, settings: Settings) -> None:
    with db.read() as conn:
        locations = {d.location for d in list_datasets(conn)}
    assert _store_files(settings) == locations


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_full_disk_is_a_failed_file_not_a_traceback(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """ENOSPC for real: the staging file of the next transfer is /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    manifest = hk_delivery(tmp_path / "d1", "d1", [0])
    entry = manifest.files[0]
    staging = staging_root(settings) / "1"  # the first transfer of a fresh database
    staging.mkdir(parents=True)
    (staging / f"{entry.checksum.removeprefix('sha256:')}.hk.part").symlink_to("/dev/full")
    report = pull(db, settings, tmp_path / "d1")
    assert report.id == 1
    assert report.status == "FAILED"
    assert "No space left on device (ENOSPC)" in report.transfer.message


def test_recovery_fails_only_transfers_whose_process_is_gone(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    from dpct.storage import claim_files, set_claim_location, start_transfer
    from dpct.transfer import recover_stale_transfers
    from dpct.transfer._owner import this_process

    me = this_process()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store_file = Path(settings.store_root) / "hk" / "x_t2.parquet"
    store_file.parent.mkdir(parents=True)
    store_file.write_bytes(b"moved in, never registered")
    now = time.time()
    with db.write() as conn:
        alive = start_transfer(
            conn,
            direction="pull",
            peer="a",
            files=1,
            nbytes=1,
            now=now,
            host=me.host,
            pid=me.pid,
            pid_start=me.pid_start,
        )
        dead = start_transfer(
            conn,
            direction="pull",
            peer="b",
            files=1,
            nbytes=1,
            now=now,
            host=me.host,
            pid=gone.pid,
        )
        far = start_transfer(
            conn,
            direction="push",
            peer="c",
            files=1,
            nbytes=1,
            now=now - 3600,
            host="elsewhere.example",
            pid=1,
        )
        near = start_transfer(
            conn,
            direction="push",
            peer="d",
            files=1,
            nbytes=1,
            now=now - 10,
            host="elsewhere.example",
            pid=1,
        )
        assert not claim_files(conn, dead, [("sha256:00", "hk", "x")], now=now).held
        set_claim_location(conn, dead, ("sha256:00", "hk"), str(store_file))
    recovered = recover_stale_transfers(db)
    assert sorted(recovered.failed) == sorted([dead, far])
    assert recovered.removed == [str(store_file)] and not store_file.exists()
    assert recovered.released == 1
    with db.read() as conn:
        status = {t.id: t.status for t in list_transfers(conn)}
    assert status == {alive: "RUNNING", dead: "FAILED", far: "FAILED", near: "RUNNING"}
    assert recover_stale_transfers(db).failed == []  # idempotent
