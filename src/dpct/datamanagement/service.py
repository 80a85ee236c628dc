"""Data management services: runs, run check closure and retraction.

What the CLI and the console call. Each function opens its own transaction, applies
the rules (what may happen in which state) and returns typed records. Times default to
the wall clock; tests pass ``now``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dpct.datamanagement._cleaning import Cleaned, clean_retracted, remove_file
from dpct.datamanagement._redelivery import refire_keys
from dpct.datamanagement._reports import report_files, set_reports_aside
from dpct.datamanagement._tasks import CLEAN_DESCRIPTOR, CLEAN_WORKFLOW
from dpct.datamodel import DataSpec
from dpct.errors import BadInput, Conflict, InvalidState, NotFound
from dpct.storage import (
    RUN_SOFTWARE,
    AimRunRow,
    ClosurePlan,
    ClosureResult,
    Connection,
    Database,
    DatasetRow,
    DatasetState,
    DescriptorRow,
    RunCheckErrorRow,
    RunCheckRow,
    RunRow,
    RunStatus,
    add_events,
    aim_run_rows,
    check_errors,
    dataset_states,
    derive_run_status,
    get_check,
    get_run,
    get_workflow,
    insert_run,
    intermediate_datasets,
    is_intermediate,
    job_log_paths,
    list_checks,
    list_runs,
    mark_retracted,
    plan_closure,
    refresh_run_status,
    release_firings,
    reopen_closed_run,
    retracted_datasets,
    retracted_hull,
    retraction_targets,
    run_workflows,
    set_run_ignored,
)
from dpct.storage import attach_workflows as _attach
from dpct.storage import check_closure as _check_closure
from dpct.storage import set_run_status as _set_status
from dpct.workflows import service as rms

__all__ = [
    "Cleaned",
    "ClosurePlan",
    "ClosureReport",
    "Reopened",
    "Retraction",
    "RetractionPlan",
    "aim_runs",
    "attach_workflows",
    "check_closure",
    "clean_retracted",
    "closure_check",
    "closure_checks",
    "closure_errors",
    "create_run",
    "ignore_run",
    "refresh_runs",
    "reopen_run",
    "retract",
    "run",
    "runs",
    "set_run_status",
]


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _software(sw: str) -> str:
    name = sw.strip().upper()
    if name not in RUN_SOFTWARE:
        raise BadInput(f"unknown pipeline {sw!r} for a run; use one of {', '.join(RUN_SOFTWARE)}")
    return name


def _interval(start_ns: int, end_ns: int) -> None:
    if end_ns <= start_ns:
        raise BadInput(
            f"the OBMT range is empty: end {end_ns} is not after start {start_ns}; "
            "give --end after --start"
        )


def _plural(ids: Sequence[int], noun: str) -> str:
    return f"{noun}{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"


# ---------------------------------------------------------------- runs


def _existing_run(conn: Connection, run_id: int) -> RunRow:
    row = get_run(conn, run_id)
    if row is None:
        raise NotFound(f"run {run_id} does not exist; list them with `dpct run list`")
    return row


def _check_workflows(conn: Connection, workflow_ids: Iterable[int]) -> list[int]:
    ids = sorted(set(workflow_ids))
    missing = [i for i in ids if get_workflow(conn, i) is None]
    if missing:
        raise NotFound(
            f"{_plural(missing, 'workflow')} not found; list them with `dpct workflow list`"
        )
    return ids


def create_run(
    db: Database,
    sw: str,
    start_ns: int,
    end_ns: int,
    *,
    note: str = "",
    workflow_ids: Iterable[int] = (),
    now: float | None = None,
) -> RunRow:
    """Define a run of ``sw`` over ``[start_ns, end_ns)``, optionally with its workflows."""
    name = _software(sw)
    _interval(start_ns, end_ns)

    def work(conn: Connection) -> RunRow:
        ids = _check_workflows(conn, workflow_ids)
        t = _now(now)
        run_id = insert_run(conn, sw=name, start_ns=start_ns, end_ns=end_ns, now=t, note=note)
        _attach(conn, run_id, ids, t)
        return _existing_run(conn, run_id)

    return db.run_write(work)


def attach_workflows(
    db: Database, run_id: int, workflow_ids: Iterable[int], *, now: float | None = None
) -> RunRow:
    """Make workflows part of a run; the run's status then follows theirs."""

    def work(conn: Connection) -> RunRow:
        row = _existing_run(conn, run_id)
        if row.closed:
            raise InvalidState(f"run {run_id} is closed; define a new run for new work")
        _attach(conn, run_id, _check_workflows(conn, workflow_ids), _now(now))
        return _existing_run(conn, run_id)

    return db.run_write(work)


def _live(conn: Connection, rows: list[RunRow]) -> list[RunRow]:
    # The stored status follows each workflow's end; deriving it again costs little and
    # stays right for runs whose workflows changed before that rule existed.
    linked = run_workflows(conn, [r.id for r in rows])
    return [
        dataclasses.replace(r, status=derive_run_status((s for _, s in linked[r.id]), r.status))
        for r in rows
    ]


def runs(db: Database, *, sw: str | None = None, how_many: int = 500) -> list[RunRow]:
    """Runs, newest first, with the status their workflows imply now."""
    name = _software(sw) if sw else None
    with db.read() as conn:
        return _live(conn, list_runs(conn, sw=name, how_many=how_many))


def aim_runs(db: Database, *, how_many: int = 500) -> list[AimRunRow]:
    """The AimRun table, newest first: AIM runs with what they processed and produced."""
    with db.read() as conn:
        return aim_run_rows(conn, _live(conn, list_runs(conn, sw="AIM", how_many=how_many)))


def run(db: Database, run_id: int) -> RunRow:
    with db.read() as conn:
        return _live(conn, [_existing_run(conn, run_id)])[0]


def set_run_status(db: Database, run_id: int, status: str, *, now: float | None = None) -> RunRow:
    """Set the status of a run that has no workflows (one run outside dpct, say)."""
    if status not in RunStatus.__members__:
        raise BadInput(f"unknown run status {status!r}; use one of {', '.join(RunStatus)}")

    def work(conn: Connection) -> RunRow:
        row = _existing_run(conn, run_id)
        if row.workflow_ids:
            raise InvalidState(
                f"run {run_id} has workflows ({', '.join(map(str, row.workflow_ids))}); "
                "its status follows theirs"
            )
        _set_status(conn, run_id, status, _now(now))
        return _existing_run(conn, run_id)

    return db.run_write(work)


def ignore_run(
    db: Database, run_id: int, *, ignored: bool = True, note: str = "", now: float | None = None
) -> RunRow:
    """Ignore solution: leave a run out of closure (a failed run that was redone), or undo."""

    def work(conn: Connection) -> RunRow:
        row = _existing_run(conn, run_id)
        if row.closed:
            raise InvalidState(
                f"run {run_id} is closed: its intermediate data are gone; reopen it first "
                f"with `dpct run reopen {run_id} --reason TEXT`"
            )
        set_run_ignored(conn, run_id, ignored, _now(now), note)
        return _existing_run(conn, run_id)

    return db.run_write(work)


@dataclass(frozen=True)
class Reopened:
    run: RunRow
    lost: list[DatasetRow]
    """Intermediate datasets of the run that closure deleted: reopening cannot restore
    them; a failed job that needs one must be redone from its inputs."""


def reopen_run(db: Database, run_id: int, *, reason: str, now: float | None = None) -> Reopened:
    """The way out of a wrong closure: the run is open again, later work joins it.

    Its status goes back to what its workflows imply, and workflows of its period join
    it again instead of defining a second run over the same period (an OVERLAP). The
    run's note and the ``run.reopened`` event say why and what closure deleted.
    """
    if not reason.strip():
        raise BadInput("give the reason for reopening the run (--reason); the event log keeps it")

    def work(conn: Connection) -> Reopened:
        row = _existing_run(conn, run_id)
        if not row.closed:
            raise InvalidState(f"run {run_id} is not closed; nothing to reopen")
        lost = [
            d
            for d in intermediate_datasets(conn, [run_id], is_intermediate, deleted=True)
            if d.state == DatasetState.DELETED
        ]
        gone = (
            f"{len(lost)} intermediate datasets deleted by closure are gone "
            f"({', '.join(str(d.id) for d in lost)})"
            if lost
            else "closure had deleted no intermediate data"
        )
        note = f"reopened: {reason.strip()}; {gone}"
        reopen_closed_run(conn, run_id, _now(now), note)
        return Reopened(_existing_run(conn, run_id), lost)

    return db.run_write(work)


# ---------------------------------------------------------------- closure


@dataclass(frozen=True)
class ClosureReport:
    plan: ClosurePlan
    """What the check found and did (all of it, on a dry run, is only what it would do)."""
    check: RunCheckRow | None
    """The stored check; None on a dry run, which stores nothing."""
    errors: list[RunCheckErrorRow]
    closed_runs: list[int]
    deleted: list[DatasetRow]
    files_removed: int
    """Files actually removed; fewer than ``deleted`` when some were already gone."""
    files_failed: list[Cleaned]
    """Files that could not be removed (orphans now: their rows are DELETED)."""


def check_closure(
    db: Database,
    sw: str,
    start_ns: int,
    end_ns: int,
    *,
    force: bool = False,
    dry_run: bool = False,
    expect: ClosurePlan | None = None,
    now: float | None = None,
) -> ClosureReport:
    """Run check closure over ``[start_ns, end_ns)``; when it passes, close the runs.

    The check, its error view, the runs' closing and their intermediate datasets'
    DELETED state commit together; the files are removed after that commit. A dry run
    only computes the plan that the check would execute; ``force`` lets runs whose
    period is not complete close (the check's note says so). ``expect``: the plan that
    was shown; the check is refused if it would now close or delete anything else.
    """
    name = _software(sw)
    _interval(start_ns, end_ns)
    if dry_run:
        with db.read() as conn:
            plan = plan_closure(conn, name, start_ns, end_ns, force=force)
        return ClosureReport(plan, None, [], [], [], 0, [])
    result: ClosureResult = db.run_write(
        lambda conn: _check_closure(
            conn, name, start_ns, end_ns, _now(now), force=force, expect=expect
        )
    )
    removals = [remove_file(d) for d in result.deleted]
    return ClosureReport(
        result.plan,
        result.check,
        result.errors,
        result.closed_runs,
        result.deleted,
        sum(r.file_removed for r in removals),
        [r for r in removals if r.error],
    )


def closure_checks(
    db: Database, *, sw: str | None = None, how_many: int = 100
) -> list[RunCheckRow]:
    """The run check closure table, newest first."""
    name = _software(sw) if sw else None
    with db.read() as conn:
        return list_checks(conn, sw=name, how_many=how_many)


def closure_check(db: Database, check_id: int) -> RunCheckRow:
    with db.read() as conn:
        row = get_check(conn, check_id)
    if row is None:
        raise NotFound(f"run check {check_id} does not exist; list them with `dpct closure list`")
    return row


def closure_errors(db: Database, check_id: int) -> list[RunCheckErrorRow]:
    """The error view of one check: its gaps, overlaps and unfinished runs."""
    closure_check(db, check_id)
    with db.read() as conn:
        return check_errors(conn, check_id)


# ---------------------------------------------------------------- retraction


@dataclass(frozen=True)
class RetractionPlan:
    """Everything a retraction would change, computed before anything does."""

    asked: list[int]
    datasets: list[DatasetRow]
    """Datasets to mark RETRACTED: the AVAILABLE ones named, and all derived from them."""
    named: list[int]
    """Which of ``datasets`` were named (the others are derived)."""
    cleaning: list[DatasetRow]
    """Files the cleaning workflow deletes: these and the RETRACTED datasets already in
    their OBMT span; empty without cleaning."""
    span: tuple[int, int] | None
    """The OBMT span the cleaning workflow covers."""
    report_files: list[tuple[int, str]]
    """(job, file): report files (PNG, HTML) of the jobs that made ``datasets``, set
    aside in a ``retracted/`` folder beside them."""
    refire: list[tuple[str, str]]
    """(descriptor, firing key) released: the next delivery covering it fires again."""

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.cleaning)

    def action(self) -> tuple[list[int], list[int]]:
        """What executing the plan changes: datasets retracted, files deleted."""
        return [d.id for d in self.datasets], [d.id for d in self.cleaning]


@dataclass(frozen=True)
class Retraction:
    plan: RetractionPlan
    """What was (or, on a dry run, would be) done."""
    retracted: list[int]
    """Datasets marked RETRACTED by this call: those named and all derived from them."""
    workflow_id: int | None
    """The cleaning workflow submitted, if anything retracted is left to delete."""
    reports_moved: list[str]
    """Where the report files are now (in ``retracted/`` folders)."""


def _clean_descriptor(db: Database, now: float | None) -> DescriptorRow:
    # Registering the shipped file is a no-op once done; the latest version of the name
    # is what runs, so an operator's own newer version wins.
    rms.register_descriptor(db, CLEAN_DESCRIPTOR, now=now)
    return rms.get_descriptor(db, CLEAN_WORKFLOW)


def _span(rows: Sequence[DatasetRow]) -> tuple[int, int] | None:
    if not rows:
        return None
    return min(r.spec.start_ns for r in rows), max(r.spec.end_ns for r in rows)


def _plan_retraction(conn: Connection, ids: list[int], clean: bool) -> RetractionPlan:
    states = dataset_states(conn, ids)
    missing = [i for i in ids if i not in states]
    if missing:
        raise NotFound(f"{_plural(missing, 'dataset')} not found; list them with `dpct datasets`")
    targets, direct = retraction_targets(conn, ids)
    already = [i for i in ids if states[i] == DatasetState.RETRACTED]
    cleaning: list[DatasetRow] = []
    span = None
    if clean:
        spans = [s for s in (_span(targets), retracted_hull(conn, already)) if s is not None]
        if spans:
            span = (min(lo for lo, _ in spans), max(hi for _, hi in spans))
            by_id = {d.id: d for d in retracted_datasets(conn, *span)}
            by_id.update((d.id, d) for d in targets)
            cleaning = [by_id[i] for i in sorted(by_id)]
    logs = job_log_paths(conn, (d.job_id for d in targets if d.job_id is not None))
    return RetractionPlan(
        asked=ids,
        datasets=targets,
        named=sorted(direct),
        cleaning=cleaning,
        span=span,
        report_files=report_files(logs),
        refire=refire_keys(conn, targets),
    )


def retract(
    db: Database,
    dataset_ids: Iterable[int],
    *,
    reason: str,
    clean: bool = True,
    dry_run: bool = False,
    expect: RetractionPlan | None = None,
    now: float | None = None,
) -> Retraction:
    """Retract datasets and everything derived from them, then submit their cleaning.

    The datasets stop being inputs when this commits. The cleaning workflow
    (DataRetractionTraceExtractCleanAutWorkflow) is submitted in the same transaction,
    over the OBMT span of what is left to delete; nodes run it like any other. The
    data-trigger firings of the retracted intervals are released in it too, so a
    corrected redelivery starts the downstream workflows again; the retracted jobs'
    report files are set aside after the commit. A dry run computes the same plan and
    changes nothing; with ``expect`` (the plan that was shown) a retraction that would
    now mark or delete anything else is refused.
    """
    ids = sorted(set(dataset_ids))
    if not ids:
        raise BadInput("name at least one dataset id to retract")
    if dry_run:
        with db.read() as conn:
            return Retraction(_plan_retraction(conn, ids, clean), [], None, [])
    if not reason.strip():
        raise BadInput("give the reason for the retraction (--reason); the event log keeps it")
    descriptor = _clean_descriptor(db, now) if clean else None

    def work(conn: Connection) -> Retraction:
        plan = _plan_retraction(conn, ids, clean)
        if expect is not None and expect.action() != plan.action():
            raise Conflict(
                f"what retracting {_plural(ids, 'dataset')} would change differs from the "
                "preview (another retraction, cleaning or new data); nothing was retracted: "
                "look again with --dry-run"
            )
        t = _now(now)
        why = reason.strip()
        retracted = mark_retracted(conn, ids, plan.datasets, set(plan.named), t, why)
        for name, key in plan.refire:
            release_firings(conn, name, [key])
        add_events(
            conn,
            t,
            [
                (
                    "RMS",
                    "trigger.released",
                    "descriptor",
                    name,
                    f"{key}: its data were retracted ({why}); the next delivery covering "
                    "it fires again",
                )
                for name, key in plan.refire
            ]
            + [
                ("DSS", "report.retracted", "job", job, f"{path} set aside in retracted/: {why}")
                for job, path in plan.report_files
            ],
        )
        workflow_id = None
        if descriptor is not None and plan.span is not None:
            spec = DataSpec(rms.descriptor_of(descriptor).data_type, *plan.span)
            workflow_id = rms.create_workflow(conn, descriptor, spec, trigger="retraction", now=t)
        return Retraction(plan, retracted, workflow_id, [])

    result = db.run_write(work)
    moved = set_reports_aside([path for _, path in result.plan.report_files])
    return dataclasses.replace(result, reports_moved=moved)


def refresh_runs(
    db: Database, run_ids: Iterable[int], *, now: float | None = None
) -> dict[int, str]:
    """Store the status each run's workflows imply; returns the runs that changed."""
    return db.run_write(lambda conn: refresh_run_status(conn, run_ids, _now(now)))
