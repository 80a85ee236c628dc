"""Workflow descriptors and instances: insert, list, page, count, derive status."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.datamodel import DataSpec
from dpct.storage._events import add_events
from dpct.storage._records import (
    DescriptorRow,
    JobPlan,
    JobRow,
    JobStatus,
    WorkflowRow,
    WorkflowStatus,
)
from dpct.storage._runs import refresh_run_status
from dpct.storage._schema import (
    job_deps,
    jobs,
    task_limits,
    workflow_descriptors,
    workflow_job_counts,
    workflows,
)

# ---------------------------------------------------------------- descriptors


def save_descriptor(
    conn: Connection, *, name: str, version: int, source: str, content: str, now: float
) -> tuple[int, bool]:
    """Store a descriptor version; returns (id, created). Same content → same row."""
    row = conn.execute(
        sa.select(workflow_descriptors.c.id, workflow_descriptors.c.content).where(
            workflow_descriptors.c.name == name, workflow_descriptors.c.version == version
        )
    ).first()
    if row is not None:
        return int(row.id), False
    new_id = conn.execute(
        sa.insert(workflow_descriptors)
        .values(
            name=name, version=version, source=source, content=content, active=True, created_at=now
        )
        .returning(workflow_descriptors.c.id)
    ).scalar_one()
    # Only the newest version of a name fires triggers.
    conn.execute(
        sa.update(workflow_descriptors)
        .where(workflow_descriptors.c.name == name, workflow_descriptors.c.id != new_id)
        .values(active=False)
    )
    return int(new_id), True


def get_descriptor(conn: Connection, name: str, version: int | None = None) -> DescriptorRow | None:
    d = workflow_descriptors.c
    query = sa.select(workflow_descriptors).where(d.name == name)
    query = (
        query.where(d.version == version)
        if version is not None
        else query.order_by(d.version.desc()).limit(1)
    )
    row = conn.execute(query).first()
    return DescriptorRow(**row._mapping) if row else None


def get_descriptor_by_id(conn: Connection, descriptor_id: int) -> DescriptorRow:
    row = conn.execute(
        sa.select(workflow_descriptors).where(workflow_descriptors.c.id == descriptor_id)
    ).one()
    return DescriptorRow(**row._mapping)


def active_descriptors(conn: Connection) -> list[DescriptorRow]:
    query = (
        sa.select(workflow_descriptors)
        .where(workflow_descriptors.c.active.is_(True))
        .order_by(workflow_descriptors.c.name)
    )
    return [DescriptorRow(**r._mapping) for r in conn.execute(query)]


# ---------------------------------------------------------------- instances


def insert_workflow(
    conn: Connection,
    *,
    name: str,
    descriptor_id: int,
    spec: DataSpec,
    priority: int,
    trigger: str,
    plans: Sequence[JobPlan],
    now: float,
    run_id: int | None = None,
    transfer_id: int | None = None,
) -> int:
    """Insert a workflow and its planned jobs and dependencies in one go."""
    workflow_id = int(
        conn.execute(
            sa.insert(workflows)
            .values(
                name=name,
                descriptor_id=descriptor_id,
                status=WorkflowStatus.NEW,
                persistence_id=0,
                run_id=run_id,
                transfer_id=transfer_id,
                data_type=spec.data_type,
                obmt_start_ns=spec.start_ns,
                obmt_end_ns=spec.end_ns,
                ccd=spec.ccd,
                fov=spec.fov,
                priority=priority,
                trigger=trigger,
                n_jobs=len(plans),
                created_at=now,
            )
            .returning(workflows.c.id)
        ).scalar_one()
    )
    insert_jobs(conn, workflow_id, plans, priority=priority, now=now)
    add_events(
        conn,
        now,
        [
            (
                "RMS",
                "workflow.submitted",
                "workflow",
                workflow_id,
                f"{name} over {spec.text}: {len(plans)} jobs ({trigger})",
            )
        ],
    )
    return workflow_id


def _allocate_job_ids(conn: Connection, n: int) -> list[int]:
    """Ids for ``n`` new jobs, allocated up front so the insert needs no RETURNING.

    Bulk INSERT ... RETURNING of a million rows spends most of its time building and
    parsing giant statements; a plain executemany streams. PostgreSQL draws the ids
    from the table's sequence; SQLite continues after the largest id, which is safe
    because the caller's write transaction holds SQLite's only write lock.
    """
    if conn.dialect.name == "postgresql":
        query = sa.text(
            "SELECT nextval(pg_get_serial_sequence('jobs', 'id')) FROM generate_series(1, :n)"
        )
        return sorted(int(r[0]) for r in conn.execute(query, {"n": n}))
    last = conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.id), 0))).scalar_one()
    return list(range(last + 1, last + 1 + n))


def insert_jobs(
    conn: Connection,
    workflow_id: int,
    plans: Sequence[JobPlan],
    *,
    priority: int,
    now: float,
    batch: int = 20_000,
) -> list[int]:
    ids: list[int] = []
    for first in range(0, len(plans), batch):
        chunk = plans[first : first + batch]
        rows = [
            {
                "workflow_id": workflow_id,
                "seq": first + k + 1,
                "step": p.step,
                "task_type": p.task_type,
                "status": JobStatus.WAITING if p.upstream else JobStatus.QUEUED,
                "priority": priority,
                "data_type": p.spec.data_type,
                "obmt_start_ns": p.spec.start_ns,
                "obmt_end_ns": p.spec.end_ns,
                "ccd": p.spec.ccd,
                "fov": p.spec.fov,
                "params": p.params,
                "cores": p.cores,
                "max_attempts": p.max_attempts,
                "time_limit_s": p.time_limit_s,
                "attempts": 0,
                "pending_deps": len(p.upstream),
                "not_before": now,
                "created_at": now,
                "ready_at": None if p.upstream else now,
            }
            for k, p in enumerate(chunk)
        ]
        chunk_ids = _allocate_job_ids(conn, len(rows))
        for row, job_id in zip(rows, chunk_ids, strict=True):
            row["id"] = job_id
        _bulk_insert(conn, jobs, rows)
        ids.extend(chunk_ids)
    deps = [
        {"job_id": ids[k], "upstream_id": ids[u]}
        for k, plan in enumerate(plans)
        for u in plan.upstream
    ]
    for first in range(0, len(deps), batch):
        _bulk_insert(conn, job_deps, deps[first : first + batch])
    return ids


def _bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, object]]) -> None:
    """Insert many rows: COPY on PostgreSQL (one statement, one trigger call), else executemany."""
    if conn.dialect.name != "postgresql" or len(rows) < 100:
        conn.execute(sa.insert(table), rows)
        return
    columns = list(rows[0])
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


def set_task_limits(conn: Connection, limits: Mapping[str, int | None]) -> None:
    """Record per-task-type concurrency limits (None removes a limit)."""
    for task_type, limit in limits.items():
        conn.execute(sa.delete(task_limits).where(task_limits.c.task_type == task_type))
        if limit is not None:
            conn.execute(sa.insert(task_limits).values(task_type=task_type, max_running=limit))


def _workflow_row(row: sa.Row) -> WorkflowRow:
    m = row._mapping
    return WorkflowRow(
        id=m["id"],
        name=m["name"],
        status=m["status"],
        persistence_id=m["persistence_id"],
        run_id=m["run_id"],
        transfer_id=m["transfer_id"],
        spec=DataSpec(m["data_type"], m["obmt_start_ns"], m["obmt_end_ns"], m["ccd"], m["fov"]),
        priority=m["priority"],
        trigger=m["trigger"],
        n_jobs=m["n_jobs"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        descriptor_id=m["descriptor_id"],
    )


def get_workflow(conn: Connection, workflow_id: int) -> WorkflowRow | None:
    row = conn.execute(sa.select(workflows).where(workflows.c.id == workflow_id)).first()
    return _workflow_row(row) if row else None


def list_workflows(
    conn: Connection,
    *,
    how_many: int = 500,
    history: bool = False,
    name: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
) -> list[WorkflowRow]:
    """Recent (not yet ended, plus the newest) or History (ended), newest first."""
    w = workflows.c
    query = sa.select(workflows).order_by(w.id.desc()).limit(how_many)
    if history:
        query = query.where(
            w.status.in_(
                [
                    WorkflowStatus.SUCCESS,
                    WorkflowStatus.FAILED,
                    WorkflowStatus.PARTIALLYSUCCESS,
                    WorkflowStatus.CANCELLED,
                ]
            )
        )
    if name:
        query = query.where(w.name == name)
    if status:
        query = query.where(w.status == status)
    if before_id is not None:
        query = query.where(w.id < before_id)
    return [_workflow_row(r) for r in conn.execute(query)]


def job_counts(conn: Connection, workflow_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Per-status job counts, read from the incrementally kept counts table."""
    ids = list(workflow_ids)
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    c = workflow_job_counts.c
    for wf, status, n in conn.execute(
        sa.select(c.workflow_id, c.status, c.n).where(c.workflow_id.in_(ids), c.n != 0)
    ):
        out[int(wf)][status] = int(n)
    return out


def derive_status(counts: Mapping[str, int], current: str) -> str:
    """A workflow's status from its jobs' per-status counts."""
    if current == WorkflowStatus.CANCELLED:
        return current
    n = lambda *states: sum(counts.get(s, 0) for s in states)  # noqa: E731
    active = n(JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING)
    ok = n(JobStatus.SUCCESS, JobStatus.SKIPPED)
    bad = n(JobStatus.FAILED, JobStatus.UPSTREAM_FAILED)
    cancelled = n(JobStatus.CANCELLED)
    if active:
        started = n(JobStatus.RUNNING) + ok + bad + cancelled
        return WorkflowStatus.RUNNING if started or current != WorkflowStatus.NEW else current
    if bad == 0 and cancelled == 0:
        return WorkflowStatus.SUCCESS
    if ok:
        return WorkflowStatus.PARTIALLYSUCCESS
    if bad == 0:
        return WorkflowStatus.CANCELLED
    return WorkflowStatus.FAILED


_STATUS_AND_COUNTS = (
    sa.select(
        workflows.c.id,
        workflows.c.name,
        workflows.c.status,
        workflow_job_counts.c.status.label("job_status"),
        workflow_job_counts.c.n,
    )
    .select_from(
        workflows.outerjoin(
            workflow_job_counts, workflow_job_counts.c.workflow_id == workflows.c.id
        )
    )
    .where(workflows.c.id.in_(sa.bindparam("ids", expanding=True)))
)


def refresh_workflow_status(conn: Connection, workflow_ids: Iterable[int], now: float) -> None:
    """Re-derive the stored status of these workflows; record a change as an event."""
    ids = sorted(set(workflow_ids))
    if not ids:
        return
    counts: dict[int, dict[str, int]] = {}
    names: dict[int, tuple[str, str]] = {}
    for wf_id, name, current, job_status, n in conn.execute(_STATUS_AND_COUNTS, {"ids": ids}):
        names[wf_id] = (name, current)
        if job_status is not None and n:
            counts.setdefault(wf_id, {})[job_status] = int(n)
    changes = []
    for wf_id, (name, current) in sorted(names.items()):
        new = derive_status(counts.get(wf_id, {}), current)
        if new == current:
            continue
        values: dict[str, object] = {"status": new}
        ended = new in (
            WorkflowStatus.SUCCESS,
            WorkflowStatus.FAILED,
            WorkflowStatus.PARTIALLYSUCCESS,
            WorkflowStatus.CANCELLED,
        )
        values["ended_at"] = now if ended else None
        conn.execute(sa.update(workflows).where(workflows.c.id == wf_id).values(**values))
        changes.append(
            ("RMS", f"workflow.{new.lower()}", "workflow", wf_id, f"{name} {current} → {new}")
        )
    add_events(conn, now, changes)
    if changes:
        changed = [c[3] for c in changes]
        run_ids = conn.execute(
            sa.select(workflows.c.run_id)
            .where(workflows.c.id.in_(changed), workflows.c.run_id.is_not(None))
            .distinct()
        ).scalars()
        refresh_run_status(conn, list(run_ids), now)


def mark_workflows_started(conn: Connection, workflow_ids: Iterable[int], now: float) -> None:
    """NEW → RUNNING with a PERSISTENCEID, for workflows whose first job starts now."""
    ids = sorted(set(workflow_ids))
    if not ids:
        return
    w = workflows.c
    new = [
        int(i)
        for (i,) in conn.execute(
            sa.select(w.id).where(w.id.in_(ids), w.status == WorkflowStatus.NEW)
        )
    ]
    if not new:
        return
    base = conn.execute(sa.select(sa.func.coalesce(sa.func.max(w.persistence_id), 0))).scalar_one()
    for k, wf_id in enumerate(new, start=1):
        conn.execute(
            sa.update(workflows)
            .where(w.id == wf_id)
            .values(status=WorkflowStatus.RUNNING, started_at=now, persistence_id=base + k)
        )
    add_events(
        conn,
        now,
        [("RMS", "workflow.running", "workflow", i, "first job started") for i in new],
    )


# ---------------------------------------------------------------- job pages

_JOB_COLUMNS = [
    jobs.c.id,
    jobs.c.workflow_id,
    jobs.c.seq,
    jobs.c.step,
    jobs.c.task_type,
    jobs.c.status,
    jobs.c.priority,
    jobs.c.data_type,
    jobs.c.obmt_start_ns,
    jobs.c.obmt_end_ns,
    jobs.c.ccd,
    jobs.c.fov,
    jobs.c.params,
    jobs.c.cores,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.node,
    jobs.c.solution_id,
    jobs.c.log_path,
    jobs.c.error_class,
    jobs.c.error_message,
    jobs.c.created_at,
    jobs.c.ready_at,
    jobs.c.started_at,
    jobs.c.ended_at,
]


def _job_row(row: sa.Row) -> JobRow:
    m = dict(row._mapping)
    spec = DataSpec(
        m.pop("data_type"), m.pop("obmt_start_ns"), m.pop("obmt_end_ns"), m.pop("ccd"), m.pop("fov")
    )
    return JobRow(spec=spec, **m)


def get_job(conn: Connection, job_id: int) -> JobRow | None:
    row = conn.execute(sa.select(*_JOB_COLUMNS).where(jobs.c.id == job_id)).first()
    return _job_row(row) if row else None


def page_jobs(
    conn: Connection,
    workflow_id: int,
    *,
    page: int = 0,
    page_size: int = 100,
    status: str | None = None,
    after_id: int | None = None,
) -> list[JobRow]:
    """One page of a workflow's jobs without OFFSET.

    Unfiltered pages seek on the job's position in its workflow (``seq``), so page 10,000
    costs what page 1 costs. Filtered pages seek on ``(workflow_id, status, id)`` from
    ``after_id`` (the last id of the previous page).
    """
    query = sa.select(*_JOB_COLUMNS).where(jobs.c.workflow_id == workflow_id)
    if status:
        query = query.where(jobs.c.status == status)
        if after_id is not None:
            query = query.where(jobs.c.id > after_id)
        query = query.order_by(jobs.c.id)
    else:
        first = page * page_size
        query = query.where(jobs.c.seq > first).order_by(jobs.c.seq)
    return [_job_row(r) for r in conn.execute(query.limit(page_size))]


def jobs_of(conn: Connection, workflow_id: int) -> list[JobRow]:
    query = sa.select(*_JOB_COLUMNS).where(jobs.c.workflow_id == workflow_id).order_by(jobs.c.seq)
    return [_job_row(r) for r in conn.execute(query)]


def upstream_of(conn: Connection, job_id: int) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(sa.select(job_deps.c.upstream_id).where(job_deps.c.job_id == job_id))
    ]
