"""The job queue's rules, straight against the storage layer on both backends."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from dpct.datamodel import DataSpec
from dpct.storage import (
    Completion,
    Database,
    JobPlan,
    commit_completions,
    expired_leases,
    extend_leases,
    get_job,
    get_workflow,
    insert_workflow,
    job_counts,
    lease_jobs,
    save_descriptor,
    set_task_limits,
)
from dpct.storage._schema import jobs

SPEC = DataSpec("testing_counts", 0, 10)


def _plan(task: str = "testing.noop", upstream: tuple[int, ...] = (), cores: int = 1) -> JobPlan:
    return JobPlan("s", task, SPEC, "{}", cores, 2, None, upstream)


def _workflow(db: Database, plans: list[JobPlan], priority: int = 0, now: float = 0.0) -> int:
    with db.write() as conn:
        did, _ = save_descriptor(conn, name="W", version=1, source="-", content="{}", now=now)
        return insert_workflow(
            conn,
            name="W",
            descriptor_id=did,
            spec=SPEC,
            priority=priority,
            trigger="manual",
            plans=plans,
            now=now,
        )


def _lease(db: Database, now: float, slots: int = 8, node: str = "n1"):
    with db.write() as conn:
        return lease_jobs(conn, node=node, free_slots=slots, now=now, lease_s=10.0)


def _commit(db: Database, completions: list[Completion], now: float):
    with db.write() as conn:
        return commit_completions(conn, completions, now=now, retry_backoff_s=1.0)


def _true_counts(db: Database, wf: int) -> dict[str, int]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.status, sa.func.count())
            .where(jobs.c.workflow_id == wf)
            .group_by(jobs.c.status)
        ).all()
    return {s: n for s, n in rows}


def test_lease_takes_highest_priority_first_and_respects_slots(db: Database) -> None:
    low = _workflow(db, [_plan(), _plan()], priority=1)
    high = _workflow(db, [_plan(), _plan()], priority=5)
    leased = _lease(db, now=1.0, slots=3)
    assert [j.workflow_id for j in leased] == [high, high, low]
    assert len({j.token for j in leased}) == 3
    with db.read() as conn:
        assert get_workflow(conn, high).status == "RUNNING"
        assert get_workflow(conn, high).persistence_id > 0
    assert _true_counts(db, low) == {"RUNNING": 1, "QUEUED": 1}


def test_wide_jobs_and_concurrency_limits(db: Database) -> None:
    wf = _workflow(
        db, [_plan("testing.wide", cores=2), _plan("testing.limited"), _plan("testing.limited")]
    )
    with db.write() as conn:
        set_task_limits(conn, {"testing.limited": 1})
    first = _lease(db, now=1.0, slots=1)
    # The 2-core job does not fit one slot; one limited job is taken, not two.
    assert [j.task_type for j in first] == ["testing.limited"]
    assert _lease(db, now=1.0, slots=1) == []
    second = _lease(db, now=1.0, slots=2)
    assert [j.task_type for j in second] == ["testing.wide"]
    assert _true_counts(db, wf) == {"RUNNING": 2, "QUEUED": 1}


def test_fencing_rejects_a_stale_token(db: Database) -> None:
    _workflow(db, [_plan()])
    (job,) = _lease(db, now=1.0)
    with db.read() as conn:
        assert expired_leases(conn, 12.0) == [(job.id, job.token, "n1")]
    # The lease is reaped and the job re-leased by another node.
    _commit(db, [Completion(job.id, job.token, "failed", "LeaseExpired", "reaped")], now=12.0)
    (again,) = _lease(db, now=20.0, node="n2")
    assert again.id == job.id and again.token != job.token and again.attempt == 2
    stale = _commit(db, [Completion(job.id, job.token, "success")], now=21.0)
    assert stale.accepted == [] and stale.rejected == [job.id]
    with db.write() as conn:
        assert extend_leases(conn, [(job.id, job.token)], now=21.0, lease_s=5) == [job.id]
    fresh = _commit(db, [Completion(job.id, again.token, "success")], now=22.0)
    assert fresh.accepted == [job.id]
    with db.read() as conn:
        row = get_job(conn, job.id)
    assert row.status == "SUCCESS" and row.attempts == 2 and row.node == "n2"
    assert row.solution_id is not None


def test_failure_retries_with_backoff_then_fails_and_strands_nothing(db: Database) -> None:
    wf = _workflow(db, [_plan(), _plan(upstream=(0,)), _plan(upstream=(1,)), _plan()])
    leased = _lease(db, now=0.0)
    first = next(j for j in leased if j.id == min(j.id for j in leased))
    others = [j for j in leased if j is not first]
    _commit(db, [Completion(j.id, j.token, "success") for j in others], now=1.0)
    _commit(db, [Completion(first.id, first.token, "failed", "RuntimeError", "boom")], now=1.0)
    with db.read() as conn:
        row = get_job(conn, first.id)
    assert row.status == "QUEUED" and row.error_class == "RuntimeError"
    assert _lease(db, now=1.5) == []  # backoff: not before 1.0 + 1.0
    (retry,) = _lease(db, now=2.1)
    _commit(db, [Completion(retry.id, retry.token, "failed", "RuntimeError", "boom")], now=3.0)
    counts = _true_counts(db, wf)
    assert counts == {"FAILED": 1, "UPSTREAM_FAILED": 2, "SUCCESS": 1}
    with db.read() as conn:
        assert job_counts(conn, [wf])[wf] == counts
        assert get_workflow(conn, wf).status == "PARTIALLYSUCCESS"


def test_dependents_wait_for_all_upstream(db: Database) -> None:
    wf = _workflow(db, [_plan(), _plan(), _plan(upstream=(0, 1))])
    a, b = _lease(db, now=0.0)
    _commit(db, [Completion(a.id, a.token, "success")], now=1.0)
    assert _lease(db, now=1.0) == []
    _commit(db, [Completion(b.id, b.token, "skipped", "NoData", "nothing")], now=2.0)
    (c,) = _lease(db, now=2.0)
    with db.read() as conn:
        assert get_job(conn, c.id).ready_at == 2.0
    _commit(db, [Completion(c.id, c.token, "success")], now=3.0)
    assert _true_counts(db, wf) == {"SUCCESS": 2, "SKIPPED": 1}
    with db.read() as conn:
        assert get_workflow(conn, wf).status == "SUCCESS"
        assert job_counts(conn, [wf])[wf] == {"SUCCESS": 2, "SKIPPED": 1}


def test_counts_match_count_star_after_bulk_changes(db: Database, tmp_path: Path) -> None:
    wf = _workflow(db, [_plan() for _ in range(50)] + [_plan(upstream=(k,)) for k in range(50)])
    leased = _lease(db, now=0.0, slots=30)
    _commit(db, [Completion(j.id, j.token, "success") for j in leased[:20]], now=1.0)
    with db.read() as conn:
        assert job_counts(conn, [wf])[wf] == _true_counts(db, wf)
