"""Workers and nodes killed while an attempt runs or writes its output: what stays behind.

Real processes (`dpct node start`, `dpct coordinator start`, `dpct store check`). A
write is caught in the act by stopping the worker (SIGSTOP) while its ``.parquet.tmp``
exists, so each test reaches its fault state whatever the machine's load; the tests
then assert final states only: files in the store, rows, job states, log contents.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.helpers import alive as _alive
from tests.helpers import register, wait_for
from tests.helpers import worker_of as _worker_of

from dpct.config import Settings
from dpct.processing import LocalCluster
from dpct.storage import Database
from dpct.storage import service as storage_service
from dpct.storage._schema import datasets
from dpct.workflows import service

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
DAY = 6000
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
BIG = 2_000_000
"""Rows of random values: an output that takes most of a second to write."""


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """Leases long enough that a starved node on a loaded machine keeps them: these tests
    are about what a killed process leaves behind, not about lease expiry."""
    return {**env, "DPCT_LEASE_S": "10", "DPCT_NODE_DOWN_AFTER_S": "15"}


# ----------------------------------------------------------------- processes


# ----------------------------------------------------------------- database and store


def _jobs(db: Database, wf: int):
    return service.jobs(db, wf, page_size=1000)


def _ended(db: Database, wf: int) -> bool:
    return service.workflow(db, wf).workflow.status in ENDED


def _registered(db: Database) -> set[str]:
    with db.read() as conn:
        return set(conn.execute(sa.select(datasets.c.location)).scalars())


def _store_files(settings: Settings) -> set[str]:
    return {str(p) for p in settings.products_dir.rglob("*") if p.is_file()}


def _dpct(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dpct", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stopped_mid_write(
    db: Database, settings: Settings, cluster: LocalCluster, tmp_path: Path
) -> tuple[int, int, Path]:
    """Run big-output jobs on pfs.pr1 until one is stopped while writing.

    Returns (job id, worker pid, its ``.tmp``). The worker is SIGSTOPped with its temp
    file present, so the write is cut at a known point; a job whose write ends before
    the test sees it simply finishes, and the next one is tried.
    """
    started = tmp_path / "started"
    register(
        db,
        tmp_path,
        "W",
        [{"name": "w", "task": "testing.gated", "params": {"started": str(started), "rows": BIG}}],
    )
    for day in range(DAY, DAY + 5):
        started.unlink(missing_ok=True)
        wf = service.submit(db, "W", service.day_spec("testing_counts", day))
        wait_for(started.exists, timeout=90, what="the job started")
        worker = _worker_of(cluster.processes["pfs.pr1"].pid)
        while not _ended(db, wf):
            partial = list(settings.products_dir.rglob("*.parquet.tmp"))
            if partial:
                os.kill(worker, signal.SIGSTOP)
                if partial[0].exists():
                    (job,) = _jobs(db, wf)
                    return job.id, worker, partial[0]
                os.kill(worker, signal.SIGCONT)  # too late: the write had ended
            time.sleep(0.005)
    raise AssertionError("no write caught in 5 tries")


def _no_traceback(*logs: Path) -> None:
    for log in logs:
        text = log.read_text() if log.exists() else ""
        assert "Traceback" not in text and "BrokenPipeError" not in text, f"{log}:\n{text}"


# ----------------------------------------------------------------- tests


def test_node_stopped_at_once_while_writing_leaves_no_file(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    procs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=1, coordinator=False, log_dir=procs) as cluster:
        job_id, worker, partial = _stopped_mid_write(db, settings, cluster, tmp_path)
        cluster.signal("pfs.pr1", signal.SIGTERM)
        log = procs / "pfs.pr1.log"
        wait_for(lambda: "draining" in log.read_text(), what="the first SIGTERM handled")
        cluster.signal("pfs.pr1", signal.SIGTERM)
        assert cluster.processes["pfs.pr1"].wait(60) == 0
    assert not _alive(worker)
    assert not partial.exists()
    assert _store_files(settings) == _registered(db), "only registered files remain"
    job = service.job(db, job_id)[0]
    assert job.status == "QUEUED" and job.attempts == 0  # handed back, not counted
    assert storage_service.check_store(db, settings, grace_s=0).clean
    _no_traceback(procs / "pfs.pr1.log")


def test_worker_killed_while_writing_leaves_no_file(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    procs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=1, log_dir=procs) as cluster:
        job_id, worker, partial = _stopped_mid_write(db, settings, cluster, tmp_path)
        os.kill(worker, signal.SIGKILL)
        job = wait_for(
            lambda: (j := service.job(db, job_id)[0]).status == "SUCCESS" and j,
            timeout=120,
            what="the crashed attempt retried",
        )
    assert job.attempts >= 2  # more when a loaded machine starved a lease
    assert not partial.exists()
    assert _store_files(settings) == _registered(db)
    assert storage_service.check_store(db, settings, grace_s=0).clean
    _no_traceback(procs / "pfs.pr1.log")


def test_node_and_worker_killed_while_writing_check_repairs(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """Power loss: nobody is left to clean up, so `dpct store check` must."""
    procs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=1, log_dir=procs) as cluster:
        job_id, worker, partial = _stopped_mid_write(db, settings, cluster, tmp_path)
        cluster.signal("pfs.coordinator", signal.SIGKILL)  # the whole host goes down
        cluster.processes["pfs.coordinator"].wait(30)
        cluster.signal("pfs.pr1", signal.SIGKILL)
        cluster.processes["pfs.pr1"].wait(30)
        os.kill(worker, signal.SIGKILL)  # stopped: it never saw its node go
        wait_for(lambda: not _alive(worker), what="the worker gone")
        assert partial.exists()
        left = _store_files(settings) - _registered(db)
        assert str(partial) in left

        found = _dpct(env, "store", "check", "--json", "--grace", "0")
        assert found.returncode == 1, found.stdout + found.stderr
        report = json.loads(found.stdout)
        assert {o["location"] for o in report["orphans"]} == left
        assert {o["location"] for o in report["orphans"] if o["partial"]} == {str(partial)}

        fixed = _dpct(env, "store", "check", "--repair", "--grace", "0")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        assert not partial.exists() and _store_files(settings) == _registered(db)

        cluster.start_coordinator()
        cluster.start_node("pfs.pr2")
        job = wait_for(
            lambda: (j := service.job(db, job_id)[0]).status == "SUCCESS" and j,
            timeout=120,
            what="the job retried on pr2",
        )
    assert job.node == "pfs.pr2" and job.attempts >= 2
    assert _store_files(settings) == _registered(db)
    assert _dpct(env, "store", "check", "--grace", "0").returncode == 0


def test_files_of_a_dead_nodes_attempt_go_when_its_lease_is_reaped(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """A node and its worker die, the coordinator lives: the reaper deletes the files."""
    procs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=1, log_dir=procs) as cluster:
        job_id, worker, partial = _stopped_mid_write(db, settings, cluster, tmp_path)
        cluster.signal("pfs.pr1", signal.SIGKILL)
        cluster.processes["pfs.pr1"].wait(30)
        os.kill(worker, signal.SIGKILL)  # stopped: it never saw its node go
        wait_for(lambda: not _alive(worker), what="the worker gone")
        assert str(partial) in _store_files(settings) - _registered(db)
        wait_for(
            lambda: service.job(db, job_id)[0].status != "RUNNING",
            timeout=300,
            what="the expired lease reaped",
        )
        wait_for(lambda: not partial.exists(), timeout=60, what="the attempt's files deleted")
        cluster.start_node("pfs.pr2")
        job = wait_for(
            lambda: (j := service.job(db, job_id)[0]).status == "SUCCESS" and j,
            timeout=300,
            what="the job retried on pr2",
        )
    assert job.node == "pfs.pr2" and job.attempts >= 2
    assert _store_files(settings) == _registered(db)


def test_orphaned_worker_of_a_killed_node_writes_nothing(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    register(
        db,
        tmp_path,
        "G",
        [
            {
                "name": "g",
                "task": "testing.gated",
                "params": {"started": str(started), "gate": str(gate)},
            }
        ],
    )
    wf = service.submit(db, "G", service.day_spec("testing_counts", DAY))
    procs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=1, log_dir=procs) as cluster:
        wait_for(started.exists, timeout=90, what="the job started on pr1")
        (job,) = _jobs(db, wf)
        worker = _worker_of(cluster.processes["pfs.pr1"].pid)
        cluster.signal("pfs.pr1", signal.SIGKILL)
        cluster.processes["pfs.pr1"].wait(30)
        gate.touch()  # the task could now finish: its worker must not
        wait_for(lambda: not _alive(worker), what="the orphaned worker exits")
        cluster.start_node("pfs.pr2")
        wait_for(lambda: _ended(db, wf), timeout=120, what="the job retried on pr2")
    (done,) = _jobs(db, wf)
    assert done.status == "SUCCESS" and done.node == "pfs.pr2"
    # Only the attempt that succeeded on pr2 left a file; every attempt on pr1 left none.
    (location,) = _store_files(settings)
    assert _registered(db) == {location} and f"j{job.id}a{done.attempts}-" in location
    _no_traceback(Path(done.log_path), procs / "pfs.pr1.log", procs / "pfs.pr2.log")
