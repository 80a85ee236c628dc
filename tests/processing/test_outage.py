"""Nodes and coordinators ride through a database outage and the death of an idle worker.

Real processes (`dpct node start`, `dpct coordinator start`) against a PostgreSQL
cluster of the test's own, which the test restarts (never the shared server on 5432).
The tests assert final states only: processes alive, every job SUCCESS exactly once,
no traceback in any log.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from tests.helpers import alive, child_env, register, wait_for, worker_of

from dpct.config import Settings
from dpct.errors import DatabaseUnreachable
from dpct.events import service as event_service
from dpct.processing import LocalCluster, Node
from dpct.processing._worker import Worker
from dpct.storage import Database, is_outage
from dpct.testing.postgres import PostgresCluster
from dpct.workflows import service

pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]
DAY = 7000
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}


def _settings(home: Path, url: str) -> Settings:
    # Leases long enough that a loaded machine does not lose them: the outage, not lease
    # expiry, is under test (expiry and fencing are tested elsewhere).
    return Settings(
        home=home,
        database_url=url,
        lease_s=20.0,
        heartbeat_s=0.3,
        node_down_after_s=30.0,
        coordinator_tick_s=0.2,
        retry_backoff_s=0.2,
    )


def _submit_sleepers(db: Database, tmp_path: Path, days: int, seconds: float) -> list[int]:
    register(
        db,
        tmp_path,
        "S",
        [
            {"name": "a", "task": "testing.sleep", "params": {"seconds": seconds}},
            {
                "name": "b",
                "task": "testing.sleep",
                "params": {"seconds": seconds},
                "depends_on": ["a"],
            },
        ],
    )
    return [
        service.submit(db, "S", service.day_spec("testing_counts", day))
        for day in range(DAY, DAY + days)
    ]


def _all_ended(db: Database, wfs: list[int]) -> bool:
    try:
        return all(service.workflow(db, wf).workflow.status in ENDED for wf in wfs)
    except Exception as err:  # the test's own reads ride through the restart too
        if is_outage(err):
            return False
        raise


def _assert_each_job_succeeded_once(db: Database, wfs: list[int]) -> None:
    jobs = [job for wf in wfs for job in service.jobs(db, wf, page_size=1000)]
    assert {job.status for job in jobs} == {"SUCCESS"}
    assert {service.workflow(db, wf).workflow.status for wf in wfs} == {"SUCCESS"}
    events = event_service.events(db, limit=10_000, kind="job.success")
    assert sorted(int(e.object_id) for e in events) == sorted(job.id for job in jobs)


def _no_traceback(*logs: Path) -> None:
    for log in logs:
        text = log.read_text() if log.exists() else ""
        assert "Traceback" not in text, f"{log}:\n{text}"


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_node_and_coordinator_ride_through_a_postgres_restart(
    private_postgres: PostgresCluster, tmp_path: Path, mode: str
) -> None:
    settings = _settings(tmp_path / "home", private_postgres.url)
    db = Database(settings.url)
    wfs = _submit_sleepers(db, tmp_path, days=10, seconds=0.5)
    procs = tmp_path / "procs"
    with LocalCluster(child_env(settings), nodes=1, slots=2, log_dir=procs) as cluster:
        wait_for(
            lambda: event_service.events(db, limit=1, kind="job.success"),
            timeout=120,
            what="a first job done",
        )
        private_postgres.restart(mode, down_s=3.0)
        wait_for(lambda: _all_ended(db, wfs), timeout=240, what="every workflow ended")
        node, coordinator = cluster.processes["pfs.pr1"], cluster.processes["pfs.coordinator"]
        assert node.poll() is None and coordinator.poll() is None, "both rode through"
        cluster.stop(timeout=60)
        assert node.returncode == 0 and coordinator.returncode == 0
    _assert_each_job_succeeded_once(db, wfs)
    node_log, coordinator_log = procs / "pfs.pr1.log", procs / "pfs.coordinator.log"
    _no_traceback(node_log, coordinator_log)
    for log in (node_log, coordinator_log):
        text = log.read_text()
        assert "metadata database is unreachable" in text, text
        assert "answers again" in text, text
        # One line per outage (and a reminder a minute), never one per retry.
        assert text.count("metadata database is unreachable") <= 2, text
    db.dispose()


@pytest.mark.postgres
def test_a_session_ended_by_the_server_mid_transaction_is_an_outage(
    private_postgres: PostgresCluster, tmp_path: Path
) -> None:
    """A node stopped (SIGSTOP) inside a transaction past the server's
    ``idle_in_transaction_session_timeout`` (1 s here) finds its session ended when it
    resumes: that write fails as an outage, and the next one succeeds."""
    import time

    import sqlalchemy as sa

    db = Database(_settings(tmp_path / "home", private_postgres.url).url)

    def paused(conn: sa.Connection) -> int:
        conn.execute(sa.text("SELECT 1"))
        time.sleep(2.5)  # the server ends the idle transaction's session meanwhile
        return int(conn.execute(sa.text("SELECT 2")).scalar_one())

    with pytest.raises(DatabaseUnreachable) as caught:
        db.run_write(paused)
    assert is_outage(caught.value)
    assert db.run_write(lambda conn: int(conn.execute(sa.text("SELECT 3")).scalar_one())) == 3
    db.dispose()


def test_is_outage_tells_wrong_settings_apart(tmp_path: Path) -> None:
    """Waiting cannot fix a wrong password or a missing database: those stop the node."""
    from dpct.errors import ConfigError, SchemaOutdated

    assert not is_outage(SchemaOutdated("run `dpct db upgrade`"))
    assert not is_outage(ConfigError("bad URL"))
    assert not is_outage(
        DatabaseUnreachable('cannot reach …: FATAL: password authentication failed for "x"')
    )
    assert not is_outage(DatabaseUnreachable('cannot reach …: database "nope" does not exist'))
    assert is_outage(DatabaseUnreachable("cannot reach …: connection refused"))
    assert not is_outage(ValueError("unrelated"))


def test_worker_killed_before_it_gets_a_job_hands_the_job_back(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """The node hands a job to a worker that died since its last look (SIGKILL while
    idle): the job goes back unrun (no attempt counted), the worker is replaced, and
    the job then succeeds. Before, ``conn.send`` raised BrokenPipeError out of the
    node's loop, which stopped the node."""
    (wf,) = _submit_sleepers(db, tmp_path, days=1, seconds=0.0)
    node = Node(db, settings, name="pfs.pr1", slots=1)
    node.workers = [Worker()]
    try:
        dead = node.workers[0]
        os.kill(dead.process.pid, signal.SIGKILL)
        dead.process.join(30)
        assert node._exchange(1) == 1  # leased, and found the worker dead
        assert not dead.busy and len(node.returned) == 1

        def step() -> bool:
            node._collect(timeout=0.1)  # replaces the dead worker
            node._exchange(1)  # hands the job back, leases it again
            return service.workflow(db, wf).workflow.status in ENDED

        wait_for(step, timeout=120, what="the workflow done")
        assert node.workers[0] is not dead
    finally:
        for worker in node.workers:
            worker.stop()
    jobs = service.jobs(db, wf, page_size=100)
    assert [job.status for job in jobs] == ["SUCCESS", "SUCCESS"]
    assert jobs[0].attempts == 1  # the handed-back lease did not count


def test_idle_worker_killed_node_stays_and_jobs_succeed(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    procs = tmp_path / "procs"
    env = {**env, "DPCT_LEASE_S": "20", "DPCT_NODE_DOWN_AFTER_S": "30"}
    with LocalCluster(env, nodes=1, slots=1, log_dir=procs) as cluster:
        node = cluster.processes["pfs.pr1"]
        first = worker_of(node.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), what="the worker gone")
        wfs = _submit_sleepers(db, tmp_path, days=3, seconds=0.0)
        wait_for(lambda: _all_ended(db, wfs), timeout=180, what="every workflow ended")
        assert node.poll() is None
        second = worker_of(node.pid)
        assert second != first
        os.kill(second, signal.SIGKILL)  # again, while jobs may be handed out
        more = [
            service.submit(db, "S", service.day_spec("testing_counts", day))
            for day in range(DAY + 3, DAY + 6)
        ]
        wait_for(lambda: _all_ended(db, wfs + more), timeout=180, what="the later workflows")
        assert node.poll() is None
        cluster.stop(timeout=60)
        assert node.returncode == 0
    _assert_each_job_succeeded_once(db, wfs + more)
    _no_traceback(procs / "pfs.pr1.log", procs / "pfs.coordinator.log")
