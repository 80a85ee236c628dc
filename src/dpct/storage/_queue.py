"""The job queue: lease, heartbeat, fenced completion, retries, reaping and operator actions.

Every function runs inside the caller's transaction. Leasing on PostgreSQL locks the
candidate rows with ``FOR UPDATE SKIP LOCKED`` so nodes never wait on each other; on
SQLite the caller's ``BEGIN IMMEDIATE`` already serialises writers.
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.datamodel import DataSpec
from dpct.storage._datasets import (
    add_datasets,
    add_solution_inputs,
    add_solutions,
    configuration_id,
)
from dpct.storage._events import EventTuple, add_events
from dpct.storage._records import (
    Completion,
    JobStatus,
    LeasedJob,
    WorkflowStatus,
)
from dpct.storage._schema import job_deps, job_logs, jobs, task_limits, workflows
from dpct.storage._workflows import mark_workflows_started, refresh_workflow_status

j = jobs.c


@dataclass(frozen=True, slots=True)
class CommitResult:
    accepted: list[int]
    rejected: list[int]


# The hot path (lease, heartbeat, commit) uses statements built once at import: building
# a SQLAlchemy expression costs several times what executing a cached one does.
_CANDIDATES = (
    sa.select(
        j.id,
        j.workflow_id,
        j.task_type,
        j.step,
        j.data_type,
        j.obmt_start_ns,
        j.obmt_end_ns,
        j.ccd,
        j.fov,
        j.params,
        j.cores,
        j.attempts,
        j.time_limit_s,
        j.ready_at,
        task_limits.c.max_running,
        workflows.c.status.label("workflow_status"),
    )
    .select_from(
        jobs.outerjoin(task_limits, task_limits.c.task_type == j.task_type).join(
            workflows, workflows.c.id == j.workflow_id
        )
    )
    .where(j.status == JobStatus.QUEUED, j.not_before <= sa.bindparam("now"))
    .order_by(j.priority.desc(), j.id)
    .limit(sa.bindparam("limit"))
)
_CANDIDATES_PG = _CANDIDATES.with_for_update(skip_locked=True, of=jobs)
_LEASE = (
    sa.update(jobs)
    .where(j.id == sa.bindparam("b_id"))
    .values(
        status=JobStatus.RUNNING,
        lease_token=sa.bindparam("b_token"),
        lease_until=sa.bindparam("b_until"),
        node=sa.bindparam("b_node"),
        started_at=sa.bindparam("b_now"),
        ended_at=None,
        attempts=j.attempts + 1,
    )
)
_READY = (
    sa.select(j.id)
    .where(j.status == JobStatus.QUEUED, j.not_before <= sa.bindparam("now"))
    .limit(1)
)
_HELD = sa.select(j.id, j.lease_token, j.status).where(
    j.id.in_(sa.bindparam("ids", expanding=True))
)
_EXTEND = (
    sa.update(jobs)
    .where(j.id.in_(sa.bindparam("ids", expanding=True)))
    .values(lease_until=sa.bindparam("until"))
)
_FENCE = sa.select(
    j.id,
    j.lease_token,
    j.status,
    j.workflow_id,
    j.attempts,
    j.max_attempts,
    j.node,
    j.step,
    j.task_type,
    sa.exists().where(job_deps.c.upstream_id == j.id).label("has_dependents"),
).where(j.id.in_(sa.bindparam("ids", expanding=True)))
_FENCE_PG = _FENCE.with_for_update(of=jobs)
_FINISH = (
    sa.update(jobs)
    .where(j.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        ended_at=sa.bindparam("b_now"),
        lease_token=None,
        lease_until=None,
        solution_id=sa.bindparam("b_solution"),
        error_class=sa.bindparam("b_error_class"),
        error_message=sa.bindparam("b_error_message"),
        log_path=sa.bindparam("b_log"),
    )
)
_REQUEUE = (
    sa.update(jobs)
    .where(j.id == sa.bindparam("b_id"))
    .values(
        status=JobStatus.QUEUED,
        lease_token=None,
        lease_until=None,
        not_before=sa.bindparam("b_not_before"),
        ready_at=sa.bindparam("b_not_before"),
        error_class=sa.bindparam("b_error_class"),
        error_message=sa.bindparam("b_error_message"),
        log_path=sa.bindparam("b_log"),
    )
)
_INSERT_LOGS = sa.insert(job_logs)
_DEPENDENTS = sa.select(job_deps.c.job_id).where(
    job_deps.c.upstream_id.in_(sa.bindparam("ids", expanding=True))
)
_COUNT_DOWN = (
    sa.update(jobs)
    .where(j.id == sa.bindparam("b_id"))
    .values(pending_deps=j.pending_deps - sa.bindparam("b_n"))
)
_RELEASE = (
    sa.update(jobs)
    .where(
        j.id.in_(sa.bindparam("ids", expanding=True)),
        j.status == JobStatus.WAITING,
        j.pending_deps <= 0,
    )
    .values(status=JobStatus.QUEUED, ready_at=sa.bindparam("now"), not_before=sa.bindparam("now"))
)


def lease_jobs(
    conn: Connection,
    *,
    node: str,
    free_slots: int,
    now: float,
    lease_s: float,
    max_jobs: int | None = None,
    accept: Callable[[str], bool] | None = None,
) -> list[LeasedJob]:
    """Lease the highest-priority ready jobs that fit ``free_slots``.

    A job takes ``cores`` slots; task types with a concurrency limit take no more than
    their limit across all nodes. A job that does not fit is passed over for a smaller
    one behind it (backfill). ``accept`` narrows the task types taken (a node queueing
    work behind running jobs takes only short ones).
    """
    if free_slots <= 0:
        return []
    max_jobs = free_slots if max_jobs is None else min(max_jobs, free_slots)
    postgres = conn.dialect.name == "postgresql"
    candidates = conn.execute(
        _CANDIDATES_PG if postgres else _CANDIDATES,
        {"now": now, "limit": max(4 * max_jobs, 16)},
    ).all()
    if not candidates:
        return []
    limited = {c.task_type for c in candidates if c.max_running is not None}
    running = _running_counts(conn, limited, postgres) if limited else Counter()
    chosen = []
    free = free_slots
    for c in candidates:
        if len(chosen) == max_jobs or free == 0:
            break
        if c.cores > free or (accept is not None and not accept(c.task_type)):
            continue
        if c.max_running is not None and running[c.task_type] >= c.max_running:
            continue
        running[c.task_type] += 1
        free -= c.cores
        chosen.append(c)
    if not chosen:
        return []
    tokens = [secrets.token_hex(16) for _ in chosen]
    conn.execute(
        _LEASE,
        [
            {"b_id": c.id, "b_token": t, "b_until": now + lease_s, "b_node": node, "b_now": now}
            for c, t in zip(chosen, tokens, strict=True)
        ],
    )
    starting = {c.workflow_id for c in chosen if c.workflow_status == WorkflowStatus.NEW}
    if starting:
        mark_workflows_started(conn, starting, now)
    add_events(
        conn,
        now,
        [
            ("PFS", "job.started", "job", c.id, f"{c.task_type} attempt {c.attempts + 1} on {node}")
            for c in chosen
        ],
    )
    return [
        LeasedJob(
            id=c.id,
            workflow_id=c.workflow_id,
            task_type=c.task_type,
            step=c.step,
            spec=DataSpec(c.data_type, c.obmt_start_ns, c.obmt_end_ns, c.ccd, c.fov),
            params=c.params,
            cores=c.cores,
            attempt=c.attempts + 1,
            token=t,
            time_limit_s=c.time_limit_s,
            started_at=now,
            ready_at=c.ready_at,
        )
        for c, t in zip(chosen, tokens, strict=True)
    ]


def _running_counts(conn: Connection, limited: set[str], postgres: bool) -> Counter[str]:
    types = sorted(limited)
    if postgres:
        # Serialise leasing of limited task types so two nodes can't both take the last slot.
        conn.execute(
            sa.select(task_limits.c.task_type)
            .where(task_limits.c.task_type.in_(types))
            .with_for_update()
        ).all()
    query = (
        sa.select(j.task_type, sa.func.count())
        .where(j.status == JobStatus.RUNNING, j.task_type.in_(types))
        .group_by(j.task_type)
    )
    return Counter({t: int(n) for t, n in conn.execute(query)})


def has_ready_jobs(conn: Connection, now: float) -> bool:
    """A cheap read: is any job ready to lease? Spares idle nodes a write lock."""
    return conn.execute(_READY, {"now": now}).first() is not None


def extend_leases(
    conn: Connection, held: Sequence[tuple[int, str]], *, now: float, lease_s: float
) -> list[int]:
    """Extend the leases this node still holds; return the job ids it has lost.

    A job is lost when its token changed (reaped and re-leased) or it left RUNNING
    (cancelled by an operator): the node must stop working on it.
    """
    if not held:
        return []
    tokens = dict(held)
    current = conn.execute(_HELD, {"ids": sorted(tokens)}).all()
    kept = [
        r.id for r in current if r.status == JobStatus.RUNNING and r.lease_token == tokens[r.id]
    ]
    if kept:
        conn.execute(_EXTEND, {"ids": kept, "until": now + lease_s})
    return sorted(set(tokens) - set(kept))


def commit_completions(
    conn: Connection,
    completions: Sequence[Completion],
    *,
    now: float,
    retry_backoff_s: float,
) -> CommitResult:
    """Commit attempts' results, each only while its lease token is still current.

    Successful attempts get a solution id (with lineage and configuration), their
    outputs registered as datasets, their log recorded, and their dependents released.
    Failed attempts are retried with exponential backoff while attempts remain, else
    marked FAILED and their descendants UPSTREAM_FAILED.
    """
    if not completions:
        return CommitResult([], [])
    by_id = {c.job_id: c for c in completions}
    postgres = conn.dialect.name == "postgresql"
    rows = {
        r.id: r for r in conn.execute(_FENCE_PG if postgres else _FENCE, {"ids": sorted(by_id)})
    }
    accepted = [
        i
        for i in sorted(by_id)
        if i in rows
        and rows[i].status == JobStatus.RUNNING
        and rows[i].lease_token == by_id[i].token
    ]
    rejected = sorted(set(by_id) - set(accepted))
    if not accepted:
        return CommitResult([], rejected)

    finished_ok: list[int] = []
    failed_final: list[int] = []
    updates: list[dict[str, object]] = []
    retries: list[dict[str, object]] = []
    events: list[EventTuple] = []
    succeeded: list[Completion] = []
    for job_id in accepted:
        c, row = by_id[job_id], rows[job_id]
        if c.outcome in ("success", "skipped"):
            if row.has_dependents:
                finished_ok.append(job_id)
            status = JobStatus.SUCCESS if c.outcome == "success" else JobStatus.SKIPPED
            if c.outcome == "success":
                succeeded.append(c)
                events += [("EMS", f"alarm.{kind}", "job", job_id, m) for kind, m in c.alarms]
            updates.append(_finish_row(job_id, status, c, now))
            events.append(
                ("PFS", f"job.{status.lower()}", "job", job_id, c.error_message or row.step)
            )
        elif c.retry and row.attempts < row.max_attempts:
            delay = retry_backoff_s * 2 ** (row.attempts - 1)
            retries.append(
                {
                    "b_id": job_id,
                    "b_not_before": now + delay,
                    "b_error_class": c.error_class,
                    "b_error_message": c.error_message,
                    "b_log": c.log_path,
                }
            )
            events.append(
                (
                    "PFS",
                    "job.retry",
                    "job",
                    job_id,
                    f"attempt {row.attempts}/{row.max_attempts} failed ({c.error_class}: "
                    f"{c.error_message}); retry in {delay:g} s",
                )
            )
        else:
            failed_final.append(job_id)
            updates.append(_finish_row(job_id, JobStatus.FAILED, c, now))
            events.append(
                (
                    "PFS",
                    "job.failed",
                    "job",
                    job_id,
                    f"{c.error_class}: {c.error_message} (attempt {row.attempts}"
                    f"/{row.max_attempts})",
                )
            )

    solution_of = _allocate_solutions(conn, succeeded, now)
    if updates:
        for u in updates:
            u["b_solution"] = solution_of.get(u["b_id"])  # type: ignore[arg-type]
        conn.execute(_FINISH, updates)
    if retries:
        conn.execute(_REQUEUE, retries)
    log_rows = [
        {
            "filename": by_id[i].log_path,
            "job_id": i,
            "workflow_id": rows[i].workflow_id,
            "subsystem": "PFS",
            "task_name": rows[i].task_type,
            "attempt": rows[i].attempts,
            "max_backup_number": 0,
        }
        for i in accepted
        if by_id[i].log_path
    ]
    if log_rows:
        conn.execute(_INSERT_LOGS, log_rows)
    add_events(conn, now, events)
    release_dependents(conn, finished_ok, now)
    add_events(conn, now, mark_upstream_failed(conn, failed_final))
    refresh_workflow_status(conn, {rows[i].workflow_id for i in accepted}, now)
    return CommitResult(accepted, rejected)


def _finish_row(job_id: int, status: str, c: Completion, now: float) -> dict[str, object]:
    return {
        "b_id": job_id,
        "b_status": status,
        "b_now": now,
        "b_error_class": c.error_class,
        "b_error_message": c.error_message,
        "b_log": c.log_path,
    }


def _allocate_solutions(
    conn: Connection, succeeded: list[Completion], now: float
) -> dict[int, int]:
    """One solution id per successful job, with its configuration, lineage and outputs."""
    if not succeeded:
        return {}
    config_ids: dict[str, int] = {}
    for c in succeeded:
        if c.config_hash and c.config_hash not in config_ids:
            config_ids[c.config_hash] = configuration_id(conn, c.config_hash, c.config_json, now)
    solution_ids = add_solutions(
        conn,
        [
            {
                "output_type": ",".join(sorted({o.data_type for o in c.outputs})) or "-",
                "generation_time": now,
                "automatically_generated": True,
                "software_version": c.software_version,
                "task_type": c.task_type,
                "configuration_id": config_ids.get(c.config_hash),
                "job_id": c.job_id,
            }
            for c in succeeded
        ],
    )
    solution_of = {c.job_id: s for c, s in zip(succeeded, solution_ids, strict=True)}
    add_solution_inputs(
        conn,
        (
            (solution_of[c.job_id], i.solution_id, i.data_type)
            for c in succeeded
            for i in c.inputs
            if i.solution_id is not None
        ),
    )
    for c in succeeded:
        if c.outputs:
            add_datasets(
                conn, c.outputs, now=now, solution_id=solution_of[c.job_id], job_id=c.job_id
            )
    return solution_of


def release_dependents(conn: Connection, finished: Sequence[int], now: float) -> None:
    """Count down the dependents of finished jobs; those with none left become QUEUED."""
    if not finished:
        return
    dependents = [int(r[0]) for r in conn.execute(_DEPENDENTS, {"ids": sorted(finished)})]
    if not dependents:
        return
    conn.execute(
        _COUNT_DOWN, [{"b_id": i, "b_n": n} for i, n in sorted(Counter(dependents).items())]
    )
    conn.execute(_RELEASE, {"ids": sorted(set(dependents)), "now": now})


def _descendants(conn: Connection, job_ids: Sequence[int]) -> list[int]:
    seed = sa.select(job_deps.c.job_id.label("jid")).where(
        job_deps.c.upstream_id.in_(sorted(job_ids))
    )
    walk = seed.cte("down", recursive=True)
    walk = walk.union(sa.select(job_deps.c.job_id).where(job_deps.c.upstream_id == walk.c.jid))
    return [int(r[0]) for r in conn.execute(sa.select(walk.c.jid))]


def mark_upstream_failed(conn: Connection, failed: Sequence[int]) -> list[EventTuple]:
    """Every waiting descendant of a failed job becomes UPSTREAM_FAILED, not stranded."""
    if not failed:
        return []
    down = _descendants(conn, failed)
    if not down:
        return []
    marked = [
        int(r[0])
        for r in conn.execute(sa.select(j.id).where(j.id.in_(down), j.status == JobStatus.WAITING))
    ]
    if marked:
        conn.execute(
            sa.update(jobs).where(j.id.in_(marked)).values(status=JobStatus.UPSTREAM_FAILED)
        )
    return [("PFS", "job.upstream_failed", "job", i, "an upstream job failed") for i in marked]


def expired_leases(conn: Connection, now: float) -> list[tuple[int, str, str | None]]:
    """(job id, token, node) of RUNNING jobs whose lease ran out."""
    query = sa.select(j.id, j.lease_token, j.node).where(
        j.status == JobStatus.RUNNING, j.lease_until < now
    )
    return [(int(i), t, n) for i, t, n in conn.execute(query)]


def hand_back(conn: Connection, held: Sequence[tuple[int, str]], now: float) -> list[int]:
    """Return leased jobs to the queue without counting the attempt (a node stopping)."""
    returned = []
    for job_id, token in held:
        result = conn.execute(
            sa.update(jobs)
            .where(j.id == job_id, j.lease_token == token, j.status == JobStatus.RUNNING)
            .values(
                status=JobStatus.QUEUED,
                lease_token=None,
                lease_until=None,
                attempts=j.attempts - 1,
                not_before=now,
                ready_at=now,
            )
        )
        if result.rowcount:
            returned.append(job_id)
    add_events(conn, now, [("PFS", "job.handed_back", "job", i, "node stopping") for i in returned])
    return returned


def workflows_of(conn: Connection, job_ids: Iterable[int]) -> set[int]:
    ids = sorted(set(job_ids))
    if not ids:
        return set()
    return {int(r[0]) for r in conn.execute(sa.select(j.workflow_id).where(j.id.in_(ids)))}


# ---------------------------------------------------------------- operator actions


def cancel_workflow_jobs(conn: Connection, workflow_id: int, now: float) -> dict[str, int]:
    """Cancel queued, waiting and running jobs; running ones lose their lease (fencing)."""
    counts: dict[str, int] = defaultdict(int)
    for status in (JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING):
        result = conn.execute(
            sa.update(jobs)
            .where(j.workflow_id == workflow_id, j.status == status)
            .values(
                status=JobStatus.CANCELLED,
                lease_token=None,
                lease_until=None,
                ended_at=now,
                error_class="Cancelled",
                error_message="cancelled by an operator",
            )
        )
        counts[status] = result.rowcount
    conn.execute(
        sa.update(workflows)
        .where(workflows.c.id == workflow_id)
        .values(status=WorkflowStatus.CANCELLED, ended_at=now)
    )
    add_events(
        conn,
        now,
        [
            (
                "RMS",
                "workflow.cancelled",
                "workflow",
                workflow_id,
                f"cancelled: {counts[JobStatus.QUEUED] + counts[JobStatus.WAITING]} queued, "
                f"{counts[JobStatus.RUNNING]} running",
            )
        ],
    )
    return dict(counts)


def resume_failed_jobs(
    conn: Connection, workflow_id: int, now: float, *, extra_attempts: dict[str, int]
) -> dict[str, int]:
    """Re-queue FAILED jobs and put their UPSTREAM_FAILED descendants back to waiting.

    Succeeded jobs are untouched, so they keep their start times and solution ids.
    ``extra_attempts`` gives each task type its retry budget again.
    """
    failed = conn.execute(
        sa.select(j.id, j.task_type, j.attempts).where(
            j.workflow_id == workflow_id, j.status == JobStatus.FAILED
        )
    ).all()
    upstream_failed = [
        int(r[0])
        for r in conn.execute(
            sa.select(j.id).where(
                j.workflow_id == workflow_id, j.status == JobStatus.UPSTREAM_FAILED
            )
        )
    ]
    for job_id, task_type, attempts in failed:
        conn.execute(
            sa.update(jobs)
            .where(j.id == job_id)
            .values(
                status=JobStatus.QUEUED,
                max_attempts=attempts + extra_attempts.get(task_type, 1),
                not_before=now,
                ready_at=now,
                ended_at=None,
            )
        )
    if upstream_failed:
        # Pending count = upstream jobs that have not finished well.
        ok = [JobStatus.SUCCESS, JobStatus.SKIPPED]
        for job_id in upstream_failed:
            pending = conn.execute(
                sa.select(sa.func.count())
                .select_from(job_deps.join(jobs, jobs.c.id == job_deps.c.upstream_id))
                .where(job_deps.c.job_id == job_id, jobs.c.status.not_in(ok))
            ).scalar_one()
            conn.execute(
                sa.update(jobs)
                .where(j.id == job_id)
                .values(
                    status=JobStatus.WAITING if pending else JobStatus.QUEUED,
                    pending_deps=pending,
                    ready_at=None if pending else now,
                    not_before=now,
                    ended_at=None,
                )
            )
    if failed or upstream_failed:
        conn.execute(
            sa.update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(status=WorkflowStatus.RUNNING, ended_at=None)
        )
    add_events(
        conn,
        now,
        [
            (
                "RMS",
                "workflow.resumed",
                "workflow",
                workflow_id,
                f"resumed {len(failed)} failed and {len(upstream_failed)} upstream-failed jobs",
            )
        ],
    )
    refresh_workflow_status(conn, [workflow_id], now)
    return {"failed": len(failed), "upstream_failed": len(upstream_failed)}


def set_workflow_priority(conn: Connection, workflow_id: int, priority: int, now: float) -> int:
    """Change the priority of the workflow and of its jobs that have not started."""
    conn.execute(
        sa.update(workflows).where(workflows.c.id == workflow_id).values(priority=priority)
    )
    result = conn.execute(
        sa.update(jobs)
        .where(
            j.workflow_id == workflow_id,
            j.status.in_([JobStatus.WAITING, JobStatus.QUEUED]),
        )
        .values(priority=priority)
    )
    add_events(
        conn,
        now,
        [
            (
                "RMS",
                "workflow.priority",
                "workflow",
                workflow_id,
                f"priority set to {priority} for {result.rowcount} jobs",
            )
        ],
    )
    return result.rowcount
