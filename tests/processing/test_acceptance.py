"""Real processes: a coordinator and nodes started as `dpct` commands, then hurt.

Each test gets its own database (SQLite file or a fresh PostgreSQL database) and home.
"""

from __future__ import annotations

import itertools
import signal
import sqlite3
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from tests.helpers import register, wait_for

from dpct.config import Settings
from dpct.events import service as event_service
from dpct.processing import LocalCluster
from dpct.processing import service as processing_service
from dpct.storage import Database
from dpct.storage._schema import datasets
from dpct.workflows import service

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]
DAY = 6000
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
LOADED = {"DPCT_LEASE_S": "8"}
"""For tests that require every job to succeed: on a busy machine a node starved of CPU
for a 2 s lease loses it (legitimately), and three such losses would use up a task's
attempts. A longer lease makes that unlikely; the tests still reap and retry."""


def _jobs(db: Database, wf: int):
    return service.jobs(db, wf, page_size=1000)


def _ended(db: Database, wf: int) -> bool:
    return service.workflow(db, wf).workflow.status in ENDED


def _running_on(db: Database, wf: int, node: str):
    return [j for j in _jobs(db, wf) if j.status == "RUNNING" and j.node == node]


def _datasets_by_job(db: Database) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with db.read() as conn:
        for job_id, location in conn.execute(sa.select(datasets.c.job_id, datasets.c.location)):
            out.setdefault(job_id, []).append(location)
    return out


def _locks_free(db: Database, job_id: int, node: str) -> bool:
    """Can another writer get what the coordinator needs to reap ``job_id``?

    A process stopped inside a write transaction keeps its locks: on SQLite the one
    write lock (every writer waits), on PostgreSQL its rows (the coordinator's reap of
    that job waits). Only the stopped process can hold them: a few seconds' wait tells.
    """
    try:
        with db.engine.connect() as conn:
            raw = conn.connection.driver_connection
            if db.is_sqlite:
                raw.execute("PRAGMA busy_timeout=5000")
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
                raw.execute("PRAGMA busy_timeout=60000")
                return True
            with conn.begin():
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                conn.execute(
                    sa.text("SELECT id FROM jobs WHERE id = :j FOR UPDATE"), {"j": job_id}
                ).all()
                conn.execute(
                    sa.text("SELECT name FROM nodes WHERE name = :n FOR UPDATE"), {"n": node}
                ).all()
            return True
    except (sa.exc.OperationalError, sqlite3.OperationalError):
        return False


def _pause(cluster: LocalCluster, name: str, db: Database, job_id: int) -> int:
    """SIGSTOP ``name`` at a moment it holds no database lock; returns the tries it took.

    A node paused inside one of its (short, SQL-only) transactions would stall the
    others until it resumes (see docs/operations.md); that is not what is tested here.
    """
    for tries in range(1, 51):
        cluster.signal(name, signal.SIGSTOP)
        if _locks_free(db, job_id, name):
            return tries
        cluster.signal(name, signal.SIGCONT)
        time.sleep(0.05 * tries)
    raise AssertionError(f"{name} held a database lock at each of 50 pauses")


def _kill_while_running(cluster: LocalCluster, db: Database, wf: int, name: str) -> set[int]:
    """SIGKILL ``name`` while it holds jobs; returns them (each must be run again).

    Stopped first, the node commits nothing more, so what it holds cannot end between
    the look and the kill, however slowly this test runs.
    """
    for _ in range(100):
        wait_for(lambda: _running_on(db, wf, name), timeout=300, what=f"a job on {name}")
        cluster.signal(name, signal.SIGSTOP)
        held = {j.id for j in _running_on(db, wf, name)}
        if held:
            cluster.signal(name, signal.SIGKILL)
            cluster.processes[name].wait(60)
            return held
        cluster.signal(name, signal.SIGCONT)
    raise AssertionError(f"{name} never held a job when stopped")


def test_node_killed_mid_job_every_job_succeeds_once(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(
        db,
        tmp_path,
        "K",
        [{"name": "m", "task": "testing.make", "partition": "3h", "params": {"seconds": 2.0}}],
    )
    wf = service.submit(db, "K", service.day_spec("testing_counts", DAY))
    env = {**env, **LOADED}
    cluster = LocalCluster(env, nodes=2, slots=1, log_dir=tmp_path / "procs")
    with cluster:
        stranded = _kill_while_running(cluster, db, wf, "pfs.pr1")
        wait_for(lambda: _ended(db, wf), timeout=600, what="workflow end")
        wait_for(
            lambda: {n.name: n.status for n in processing_service.nodes(db)}["pfs.pr1"] == "DOWN",
            timeout=300,
            what="pr1 marked DOWN",
        )
    jobs = _jobs(db, wf)
    assert {j.status for j in jobs} == {"SUCCESS"}
    # Under load a starved node may also lose a lease and its job run again, so attempts
    # are not counted; what must hold is that every job succeeded exactly once.
    for j in jobs:
        if j.id in stranded:
            assert j.attempts >= 2 and j.node == "pfs.pr2", j
    published = _datasets_by_job(db)
    assert sorted(published) == sorted(j.id for j in jobs)
    assert all(len(v) == 1 for v in published.values())
    events = event_service.events(db, limit=1000, kind="job.success")
    assert sorted(int(e.object_id) for e in events) == sorted(j.id for j in jobs)


def _attempt_running(db: Database, wf: int, node: str, settings: Settings):
    """The job and attempt that ``node``'s worker has begun (not merely leased), if any.

    Under load a starved node may lose a lease before its worker starts; the attempt
    number is read each time, so a re-leased job is followed.
    """
    for job in _running_on(db, wf, node):
        log = settings.logs_dir / f"workflow-{wf}" / f"job-{job.id}.log"
        if log.exists() and f"attempt {job.attempts} of job {job.id}:" in log.read_text():
            return job
    return None


def test_paused_node_completion_is_rejected(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    # 20 s: under load, pausing pr1 outside a transaction can take several seconds.
    step = {"name": "m", "task": "testing.make", "params": {"seconds": 20.0}}
    register(db, tmp_path, "S", [step])
    wf = service.submit(db, "S", service.day_spec("testing_counts", DAY))
    env = {**env, **LOADED}
    cluster = LocalCluster(env, nodes=1, slots=1, log_dir=tmp_path / "procs")
    products = settings.products_dir
    with cluster:
        job = wait_for(
            lambda: _attempt_running(db, wf, "pfs.pr1", settings),
            timeout=300,
            what="pr1's worker running an attempt",
        )
        _pause(cluster, "pfs.pr1", db, job.id)
        (held,) = _jobs(db, wf)
        assert (held.status, held.node, held.attempts) == ("RUNNING", "pfs.pr1", job.attempts), (
            "pr1 finished the 20 s attempt before the test could pause it"
        )
        cluster.start_node("pfs.pr2")
        wait_for(lambda: _ended(db, wf), timeout=600, what="the job retried on pr2")
        stale = f"j{job.id}a{job.attempts}-"
        # pr1's worker is not paused: it finishes the attempt that pr1 can no longer commit.
        wait_for(
            lambda: any(stale in p.name for p in products.rglob("*.parquet")),
            timeout=300,
            what="pr1's attempt file",
        )
        cluster.signal("pfs.pr1", signal.SIGCONT)
        wait_for(
            lambda: not any(stale in p.name for p in products.rglob("*.parquet")),
            timeout=300,
            what="the rejected attempt's output removed",
        )
        log = tmp_path / "procs" / "pfs.pr1.log"
        wait_for(lambda: "rejected" in log.read_text(), timeout=300, what="rejection logged")
    (done,) = _jobs(db, wf)
    # A later attempt (a starved pr2 may lose a lease too), committed once, by pr2.
    assert done.status == "SUCCESS" and done.attempts > job.attempts and done.node == "pfs.pr2"
    (location,) = _datasets_by_job(db)[job.id]
    assert f"j{job.id}a{done.attempts}-" in location
    assert len(list(products.rglob("*.parquet"))) == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sigterm_drains_then_second_sigterm_hands_back(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(
        db,
        tmp_path,
        "T",
        [{"name": "s", "task": "testing.sleep", "partition": "6h", "params": {"seconds": 2.0}}],
    )
    wf = service.submit(db, "T", service.day_spec("testing_counts", DAY))
    cluster = LocalCluster(env, nodes=1, slots=1, coordinator=False, log_dir=tmp_path / "procs")
    with cluster:
        (job,) = wait_for(lambda: _running_on(db, wf, "pfs.pr1"), what="job on pr1")
        cluster.signal("pfs.pr1", signal.SIGTERM)
        assert cluster.processes["pfs.pr1"].wait(30) == 0
        jobs = {j.id: j for j in _jobs(db, wf)}
        assert jobs[job.id].status == "SUCCESS" and jobs[job.id].attempts == 1
        assert sorted(j.status for j in jobs.values()) == ["QUEUED"] * 3 + ["SUCCESS"]

        cluster.start_node("pfs.pr1")
        (second,) = wait_for(lambda: _running_on(db, wf, "pfs.pr1"), what="next job")
        cluster.signal("pfs.pr1", signal.SIGTERM)
        time.sleep(0.5)  # two signals sent at once may be delivered as one
        cluster.signal("pfs.pr1", signal.SIGTERM)
        assert cluster.processes["pfs.pr1"].wait(10) == 0
        back = next(j for j in _jobs(db, wf) if j.id == second.id)
        assert back.status == "QUEUED" and back.attempts == 0
    assert {n.name: n.status for n in processing_service.nodes(db)}["pfs.pr1"] == "DOWN"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cancel_running_crash_and_time_limit_spare_the_node(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(
        db, tmp_path, "Long", [{"name": "s", "task": "testing.sleep", "params": {"seconds": 60}}]
    )
    register(
        db,
        tmp_path,
        "Bad",
        [
            {"name": "crash", "task": "testing.crash"},
            {"name": "slow", "task": "testing.slow", "params": {"seconds": 30}},
            {"name": "after", "task": "testing.noop", "depends_on": []},
        ],
    )
    long = service.submit(db, "Long", service.day_spec("testing_counts", DAY), priority=10)
    cluster = LocalCluster(env, nodes=1, slots=1, log_dir=tmp_path / "procs")
    with cluster:
        wait_for(lambda: _running_on(db, long, "pfs.pr1"), what="long job running")
        counts = service.cancel(db, long)
        assert counts["RUNNING"] == 1
        bad = service.submit(db, "Bad", service.day_spec("testing_counts", DAY))
        wait_for(lambda: _ended(db, bad), timeout=60, what="crash/slow workflow end")
        assert cluster.processes["pfs.pr1"].poll() is None, "the node survived"
    (cancelled,) = _jobs(db, long)
    assert cancelled.status == "CANCELLED"
    jobs = {j.step: j for j in _jobs(db, bad)}
    assert jobs["crash"].status == "FAILED" and jobs["crash"].error_class == "WorkerCrashed"
    assert jobs["slow"].status == "FAILED" and jobs["slow"].error_class == "TimeLimitExceeded"
    assert jobs["after"].status == "SUCCESS"
    assert service.workflow(db, bad).workflow.status == "PARTIALLYSUCCESS"
    # The cancelled job's worker was stopped, not left sleeping for a minute.
    assert cancelled.ended_at is not None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_concurrency_limit_and_plugin_task_across_nodes(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(
        db,
        tmp_path,
        "L",
        [{"name": "l", "task": "testing.limited", "partition": "6h", "params": {"seconds": 0.5}}],
    )
    register(
        db,
        tmp_path,
        "Plug",
        [
            {"name": "make", "task": "testing.make", "params": {"rows": 7}},
            {
                "name": "double",
                "task": "example.double",
                "depends_on": ["make"],
                "params": {"offset": 1.0},
            },
        ],
    )
    limited = service.submit(db, "L", service.day_spec("testing_counts", DAY))
    plug = service.submit(db, "Plug", service.day_spec("testing_counts", DAY + 1))
    with LocalCluster(env, nodes=2, slots=2, log_dir=tmp_path / "procs"):
        wait_for(lambda: _ended(db, limited) and _ended(db, plug), timeout=90, what="both end")
    spans = sorted((j.started_at, j.ended_at) for j in _jobs(db, limited))
    assert all(j.status == "SUCCESS" for j in _jobs(db, limited))
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    make, double = sorted(_jobs(db, plug), key=lambda j: j.seq)
    assert double.status == "SUCCESS" and double.task_type == "example.double"
    by_job = _datasets_by_job(db)
    source = pq.read_table(by_job[make.id][0]).column("value").to_numpy()
    doubled = pq.read_table(by_job[double.id][0]).column("value").to_numpy()
    assert list(doubled) == list(2 * source + 1.0)
    lineage = service.solution_lineage(db, double.solution_id)
    assert lineage.ancestors == [make.solution_id]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_priority_change_reorders_starts_on_a_real_node(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(db, tmp_path, "P", [{"name": "n", "task": "testing.noop", "partition": "6h"}])
    first = service.submit(db, "P", service.day_spec("testing_counts", DAY))
    second = service.submit(db, "P", service.day_spec("testing_counts", DAY + 1))
    service.change_priority(db, second, 7)
    with LocalCluster(env, nodes=1, slots=1, coordinator=False):
        wait_for(lambda: _ended(db, first) and _ended(db, second), what="both workflows end")
    jobs = sorted(_jobs(db, first) + _jobs(db, second), key=lambda j: j.started_at)
    assert [j.workflow_id for j in jobs] == [second] * 4 + [first] * 4


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_short_jobs_are_queued_behind_running_ones_and_drain_cleanly(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    register(db, tmp_path, "Q", [{"name": "n", "task": "testing.noop", "partition": "1h"}])
    register(db, tmp_path, "Q2", [{"name": "n", "task": "testing.noop", "partition": "60s"}])
    wf = service.submit(db, "Q", service.day_spec("testing_counts", DAY))
    with LocalCluster(env, nodes=1, slots=1, coordinator=False) as cluster:
        wait_for(lambda: _ended(db, wf), what="24 short jobs")
        jobs = sorted(_jobs(db, wf), key=lambda j: j.started_at)
        assert all(j.status == "SUCCESS" and j.attempts == 1 for j in jobs)

        big = service.submit(db, "Q2", service.day_spec("testing_counts", DAY + 1))
        wait_for(lambda: service.workflow(db, big).counts.get("SUCCESS", 0) > 50, what="flow")
        cluster.signal("pfs.pr1", signal.SIGTERM)
        assert cluster.processes["pfs.pr1"].wait(30) == 0
    # One slot, yet later jobs were leased before earlier ones ended: queued behind. A
    # starved node may run a stretch of jobs one at a time, so it is looked for over
    # every job both workflows ran, not over the first 24 alone.
    ran = sorted(
        (j for j in _jobs(db, wf) + _jobs(db, big) if j.ended_at is not None),
        key=lambda j: j.started_at,
    )
    assert any(b.started_at < a.ended_at for a, b in itertools.pairwise(ran))
    counts = service.workflow(db, big).counts
    assert "RUNNING" not in counts, counts  # nothing stranded by the drain
    assert counts["SUCCESS"] + counts.get("QUEUED", 0) == 1440
