"""RMS service functions: what the CLI and the web console call.

Each function opens its own transaction, applies the rules (what may happen in which
state) and returns typed records. Times default to the wall clock; tests pass ``now``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from dpct.datamodel import NS_PER_DAY, DataSpec, parse_duration_ns
from dpct.errors import BadInput, InvalidState, NotFound
from dpct.storage import (
    Database,
    DescriptorRow,
    JobRow,
    JobStatus,
    SolutionRow,
    WorkflowRow,
    WorkflowStatus,
    claim_firing,
    get_descriptor_by_id,
    get_job,
    get_solution,
    get_workflow,
    insert_workflow,
    job_counts,
    join_run,
    lineage,
    list_workflows,
    page_jobs,
    record_firing_workflow,
    refresh_run_status,
    resume_failed_jobs,
    save_descriptor,
    set_task_limits,
    set_workflow_priority,
    upstream_of,
)
from dpct.storage import (
    cancel_workflow_jobs as _cancel,
)
from dpct.storage import get_descriptor as _get_descriptor
from dpct.tasks import TASK_TYPES
from dpct.workflows._descriptor import (
    Descriptor,
    check_registrable,
    load_descriptor,
    parse_descriptor,
)
from dpct.workflows._planning import plan_jobs, task_limits

ENDED = {
    WorkflowStatus.SUCCESS,
    WorkflowStatus.FAILED,
    WorkflowStatus.PARTIALLYSUCCESS,
    WorkflowStatus.CANCELLED,
}


def _now(now: float | None) -> float:
    return time.time() if now is None else now


# ---------------------------------------------------------------- descriptors


def register_descriptor(
    db: Database, path: str | Path, *, now: float | None = None
) -> DescriptorRow:
    """Validate a descriptor file and store it as a new version (idempotent per version)."""
    descriptor = load_descriptor(path)
    return store_descriptor(db, descriptor, source=str(path), now=now)


def shipped_pipelines() -> dict[str, Path]:
    """Installed pipelines that carry workflow descriptors: name → their ``workflows`` folder.

    Found through the ``dpct.pipelines`` entry points (name → package), so that the
    workflow service does not import the science packages and a plugin package can ship
    pipelines the same way dpct does.
    """
    found = {}
    for ep in entry_points(group="dpct.pipelines"):
        spec = importlib.util.find_spec(ep.value)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            folder = Path(root) / "workflows"
            if any(folder.glob("*.toml")):
                found[ep.name] = folder
    return found


def install_pipeline(db: Database, name: str, *, now: float | None = None) -> list[DescriptorRow]:
    """Register every workflow descriptor a shipped pipeline carries."""
    pipelines = shipped_pipelines()
    if name not in pipelines:
        raise NotFound(f"no shipped pipeline {name!r}; known: {', '.join(sorted(pipelines))}")
    return [
        register_descriptor(db, path, now=now) for path in sorted(pipelines[name].glob("*.toml"))
    ]


def store_descriptor(
    db: Database, descriptor: Descriptor, *, source: str, now: float | None = None
) -> DescriptorRow:
    """Store a validated descriptor as a new version: the one way a descriptor gets in."""
    check_registrable(descriptor, source)
    content = descriptor.model_dump_json()
    with db.write() as conn:
        existing = _get_descriptor(conn, descriptor.name, descriptor.version)
        if existing is not None and existing.content != content:
            raise InvalidState(
                f"workflow descriptor {descriptor.name!r} version {descriptor.version} is "
                f"already registered with different content (from {existing.source}); "
                "raise the version number to register a change"
            )
        descriptor_id, _ = save_descriptor(
            conn,
            name=descriptor.name,
            version=descriptor.version,
            source=source,
            content=content,
            now=_now(now),
        )
        return get_descriptor_by_id(conn, descriptor_id)


def descriptor_of(row: DescriptorRow) -> Descriptor:
    """The validated descriptor of a stored row (parsed once: stored content never changes)."""
    return _parse_stored(row.content, f"{row.name} v{row.version}")


@functools.lru_cache(maxsize=256)
def _parse_stored(content: str, source: str) -> Descriptor:
    return parse_descriptor(json.loads(content), source=source)


def get_descriptor(db: Database, name: str, version: int | None = None) -> DescriptorRow:
    with db.read() as conn:
        row = _get_descriptor(conn, name, version)
    if row is None:
        which = f"version {version} of " if version is not None else ""
        raise NotFound(
            f"no {which}workflow descriptor {name!r} is registered; "
            "register it with `dpct workflow register FILE`"
        )
    return row


# ---------------------------------------------------------------- submit and plan


def create_workflow(
    conn,
    row: DescriptorRow,
    spec: DataSpec,
    *,
    trigger: str,
    now: float,
    priority: int | None = None,
    transfer_id: int | None = None,
    run_id: int | None = None,
) -> int:
    """Plan and insert a workflow inside an open transaction (used by triggers too)."""
    descriptor = descriptor_of(row)
    plans = plan_jobs(descriptor, spec)
    set_task_limits(conn, task_limits(descriptor))
    if run_id is None and descriptor.run is not None:
        run_id = join_run(
            conn,
            sw=descriptor.run.sw,
            start_ns=spec.start_ns,
            period_ns=parse_duration_ns(descriptor.run.period),
            now=now,
        )
    workflow_id = insert_workflow(
        conn,
        name=descriptor.name,
        descriptor_id=row.id,
        spec=spec,
        priority=descriptor.priority if priority is None else priority,
        trigger=trigger,
        plans=plans,
        now=now,
        transfer_id=transfer_id,
        run_id=run_id,
    )
    if run_id is not None:
        refresh_run_status(conn, [run_id], now)
    return workflow_id


def submit(
    db: Database,
    name: str,
    spec: DataSpec,
    *,
    priority: int | None = None,
    version: int | None = None,
    now: float | None = None,
    trigger: str = "manual",
) -> int:
    """Start a workflow of a registered descriptor over ``spec``; returns its ID."""
    row = get_descriptor(db, name, version)
    return db.run_write(
        lambda conn: create_workflow(
            conn, row, spec, trigger=trigger, now=_now(now), priority=priority
        )
    )


def backfill(
    db: Database,
    name: str,
    first_day: int,
    last_day: int,
    *,
    force: bool = False,
    now: float | None = None,
) -> list[int]:
    """One workflow per OBMT day in [first_day, last_day], skipping days already fired.

    A day counts as fired when a data or calendar trigger, or an earlier backfill, of the
    same descriptor already started a workflow for it; ``force`` starts one anyway.
    """
    if last_day < first_day:
        raise BadInput(f"backfill range is empty: day {first_day} to day {last_day}")
    row = get_descriptor(db, name)
    descriptor = descriptor_of(row)
    started: list[int] = []
    for day in range(first_day, last_day + 1):
        spec = DataSpec.day(descriptor.data_type, day)

        def work(conn, spec: DataSpec = spec) -> int | None:
            t = _now(now)
            firing = claim_firing(conn, descriptor.name, f"interval:{spec.start_ns}", t)
            if firing is None and not force:
                return None
            wf = create_workflow(conn, row, spec, trigger="backfill", now=t)
            if firing is not None:
                record_firing_workflow(conn, firing, wf)
            return wf

        wf = db.run_write(work)
        if wf is not None:
            started.append(wf)
    return started


# ---------------------------------------------------------------- operator actions


def _existing(conn, workflow_id: int) -> WorkflowRow:
    wf = get_workflow(conn, workflow_id)
    if wf is None:
        raise NotFound(
            f"workflow {workflow_id} does not exist; list them with `dpct workflow list`"
        )
    return wf


def cancel(db: Database, workflow_id: int, *, now: float | None = None) -> dict[str, int]:
    """Cancel a workflow: queued jobs are cancelled, running ones' workers terminated."""

    def work(conn) -> dict[str, int]:
        wf = _existing(conn, workflow_id)
        if wf.status in ENDED:
            raise InvalidState(f"workflow {workflow_id} has already ended ({wf.status})")
        return _cancel(conn, workflow_id, _now(now))

    return db.run_write(work)


def resume(db: Database, workflow_id: int, *, now: float | None = None) -> dict[str, int]:
    """Resume failed jobs: re-run FAILED jobs and their UPSTREAM_FAILED descendants only."""

    def work(conn) -> dict[str, int]:
        wf = _existing(conn, workflow_id)
        if wf.status == WorkflowStatus.CANCELLED:
            raise InvalidState(f"workflow {workflow_id} was cancelled; submit it again instead")
        counts = job_counts(conn, [workflow_id])[workflow_id]
        if not counts.get(JobStatus.FAILED) and not counts.get(JobStatus.UPSTREAM_FAILED):
            raise InvalidState(f"workflow {workflow_id} has no failed jobs to resume")
        descriptor = descriptor_of(get_descriptor_by_id(conn, wf.descriptor_id))
        budget = {s.task: TASK_TYPES.get(s.task).max_attempts for s in descriptor.steps}
        return resume_failed_jobs(conn, workflow_id, _now(now), extra_attempts=budget)

    return db.run_write(work)


def change_priority(
    db: Database, workflow_id: int, priority: int, *, now: float | None = None
) -> int:
    """Change jobs priority of a workflow; returns how many not-yet-started jobs changed."""

    def work(conn) -> int:
        wf = _existing(conn, workflow_id)
        if wf.status in ENDED:
            raise InvalidState(
                f"workflow {workflow_id} has ended ({wf.status}); nothing to reorder"
            )
        return set_workflow_priority(conn, workflow_id, priority, _now(now))

    return db.run_write(work)


# ---------------------------------------------------------------- views


@dataclass(frozen=True)
class WorkflowView:
    workflow: WorkflowRow
    counts: dict[str, int]


def workflows(
    db: Database,
    *,
    history: bool = False,
    how_many: int = 500,
    name: str | None = None,
    status: str | None = None,
) -> list[WorkflowView]:
    """The console's workflow list: Recent (all, newest first) or History (ended ones)."""
    with db.read() as conn:
        rows = list_workflows(conn, how_many=how_many, history=history, name=name, status=status)
        counts = job_counts(conn, [w.id for w in rows])
    return [WorkflowView(w, counts[w.id]) for w in rows]


def workflow(db: Database, workflow_id: int) -> WorkflowView:
    with db.read() as conn:
        wf = _existing(conn, workflow_id)
        return WorkflowView(wf, job_counts(conn, [workflow_id])[workflow_id])


def jobs(
    db: Database,
    workflow_id: int,
    *,
    page: int = 0,
    page_size: int = 100,
    status: str | None = None,
    after_id: int | None = None,
) -> list[JobRow]:
    """One page of a workflow's jobs (deep pages cost what the first costs)."""
    with db.read() as conn:
        _existing(conn, workflow_id)
        return page_jobs(
            conn, workflow_id, page=page, page_size=page_size, status=status, after_id=after_id
        )


def job(db: Database, job_id: int) -> tuple[JobRow, list[int]]:
    """A job and the ids of the jobs it depends on."""
    with db.read() as conn:
        row = get_job(conn, job_id)
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return row, upstream_of(conn, job_id)


def job_log(db: Database, job_id: int) -> str:
    row, _ = job(db, job_id)
    if not row.log_path:
        raise NotFound(f"job {job_id} has no log yet (status {row.status})")
    path = Path(row.log_path)
    if not path.exists():
        raise NotFound(f"the log of job {job_id} ({path}) is gone; it may have been rotated away")
    return path.read_text(errors="replace")


@dataclass(frozen=True)
class Lineage:
    solution: SolutionRow
    ancestors: list[int]
    descendants: list[int]


def solution_lineage(db: Database, solution_id: int) -> Lineage:
    with db.read() as conn:
        solution = get_solution(conn, solution_id)
        if solution is None:
            raise NotFound(f"solution id {solution_id} does not exist")
        return Lineage(
            solution,
            lineage(conn, solution_id, "ancestors"),
            lineage(conn, solution_id, "descendants"),
        )


def day_spec(data_type: str, first_day: int, last_day: int | None = None) -> DataSpec:
    last = first_day if last_day is None else last_day
    return DataSpec(data_type, first_day * NS_PER_DAY, (last + 1) * NS_PER_DAY)
