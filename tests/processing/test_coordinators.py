"""Two coordinator processes at once: one active, one standing by, taking over on SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import register, wait_for

from dpct.config import Settings
from dpct.processing import LocalCluster
from dpct.processing import service as processing_service
from dpct.storage import Database, current_leader
from dpct.workflows import service

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]
DAY = 6000
ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
FIRST, SECOND = "pfs.coordinator", "pfs.coordinator.2"


def _rows(db: Database) -> dict[str, object]:
    return {n.name: n for n in processing_service.nodes(db)}


def _role(db: Database, name: str, role: str) -> bool:
    row = _rows(db).get(name)
    return row is not None and row.status == "UP" and row.role == role


def _each_done(db: Database, expected: int) -> list:
    views = [v for v in service.workflows(db, how_many=1000) if v.workflow.name == "Each"]
    makes = [v for v in service.workflows(db, how_many=1000) if v.workflow.name == "Make"]
    ended = all(v.workflow.status in ENDED for v in views + makes)
    return views if ended and len(views) >= expected else []


def test_second_coordinator_stands_by_and_takes_over_when_the_first_is_killed(
    db: Database, settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    # The coordinator lease lasts DPCT_NODE_DOWN_AFTER_S: long enough here that a starved
    # active coordinator keeps it on a busy machine (losing it would be safe, only noisy).
    # Job leases too: three lost to starvation would use up a job's attempts.
    env = {**env, "DPCT_NODE_DOWN_AFTER_S": "8", "DPCT_LEASE_S": "8"}
    register(db, tmp_path, "Make", [{"name": "m", "task": "testing.make", "partition": "6h"}])
    register(
        db,
        tmp_path,
        "Each",
        [{"name": "n", "task": "testing.noop"}],
        trigger={"kind": "data", "data_type": "testing_counts", "mode": "dataset"},
    )
    logs = tmp_path / "procs"
    with LocalCluster(env, nodes=1, slots=2, coordinator=False, log_dir=logs) as cluster:
        first = cluster.start_coordinator("c1")
        wait_for(lambda: _role(db, FIRST, "coordinator"), timeout=120, what="c1 active")
        second = cluster.start_coordinator("c2")  # the same command again
        wait_for(lambda: _role(db, SECOND, "standby"), timeout=120, what="c2 standing by")
        rows = _rows(db)
        assert (rows[FIRST].pid, rows[SECOND].pid) == (first.pid, second.pid)
        assert rows["rms.manager"].pid == first.pid

        # A name held by a live coordinator is refused, with who holds it.
        refused = subprocess.run(
            [sys.executable, "-m", "dpct", "coordinator", "start", "--name", "coordinator"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 4, refused.stderr
        assert f"pid {first.pid} since" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr

        service.submit(db, "Make", service.day_spec("testing_counts", DAY))
        each = wait_for(lambda: _each_done(db, 4), timeout=300, what="4 Each workflows")

        first.send_signal(signal.SIGKILL)
        first.wait(60)
        wait_for(lambda: _role(db, SECOND, "coordinator"), timeout=300, what="c2 takes over")
        wait_for(lambda: _rows(db)[FIRST].status == "DOWN", timeout=300, what="c1 DOWN")
        assert _rows(db)["rms.manager"].pid == second.pid
        service.submit(db, "Make", service.day_spec("testing_counts", DAY + 1))
        each = wait_for(lambda: _each_done(db, 8), timeout=300, what="8 Each workflows")
        assert second.poll() is None
    # Exactly once: one Each workflow per Make dataset (8), all succeeded.
    assert len(each) == 8
    assert len({v.workflow.spec.start_ns for v in each}) == 8
    assert {v.workflow.status for v in service.workflows(db, how_many=1000)} == {"SUCCESS"}
    with db.read() as conn:
        leader = current_leader(conn)
    assert leader is not None and (leader.holder, leader.expires_at) == (SECOND, 0.0)  # released
    assert _rows(db)[SECOND].status == "DOWN"
    for name in ("c1", "c2"):
        text = (logs / f"{name}.log").read_text()
        assert "Traceback" not in text, text
    c2 = (logs / "c2.log").read_text()
    assert "standing by; the active coordinator is pfs.coordinator" in c2
    assert "took over from pfs.coordinator on" in c2
