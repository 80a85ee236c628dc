"""Run check closure: do a pipeline's runs tile an OBMT range exactly, and may they close?

Runs are half-open intervals, so ``[a, b)`` followed by ``[b, c)`` tiles without gap or
overlap. A range is closed only when the runs of one pipeline (minus those an operator
ignored) cover it once and for all: no part uncovered (a GAP), no part covered twice
(an OVERLAP, two solutions for the same data), and every run ended in SUCCESS (an
UNFINISHED run may still need its intermediate data, to resume failed jobs).

Closing deletes the runs' intermediate data in two phases: the rows are marked DELETED
in the check's transaction, and the caller removes the files after the commit. A crash
in between leaves an orphan file, never a row that points at nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.datamodel import DATA_TYPES
from dpct.errors import UnknownDataType
from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._firings import DATA_CURSOR, get_cursor
from dpct.storage._records import (
    DatasetRow,
    DatasetState,
    RunCheckErrorRow,
    RunCheckRow,
    RunRow,
    RunStatus,
    WorkflowStatus,
)
from dpct.storage._retention import mark_deleted
from dpct.storage._runs import mark_runs_closed, refresh_run_status, runs_in_range
from dpct.storage._schema import datasets, jobs, run_check_errors, run_checks, workflows

GAP = "GAP"
OVERLAP = "OVERLAP"
UNFINISHED = "UNFINISHED"
PENDING = "PENDING"
"""Datasets in the range the data triggers have not evaluated yet: a run that looks
finished may be about to start its next workflow, which needs its intermediate data."""
ACTIVE = "ACTIVE"
"""A workflow outside any run (a reprocessing) still working on the range: it may read
the intermediate data closure would delete."""

CHECK_OK = "OK"
CHECK_ERROR = "ERROR"
DELETED = "DELETED"
NOTHING = "NOTHING"
SKIPPED = "SKIPPED"

_BATCH = 5_000
"""Ids per IN list: SQLite allows 32,766 bound parameters in one statement."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A finding of the check, before it is stored in the error view."""

    kind: str
    start_ns: int
    end_ns: int
    run_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClosureResult:
    check: RunCheckRow
    errors: list[RunCheckErrorRow]
    closed_runs: list[int]
    deleted: list[DatasetRow]
    """Datasets marked DELETED; their files are the caller's to remove after the commit."""


def find_problems(runs: Sequence[RunRow], start_ns: int, end_ns: int) -> list[Problem]:
    """Gaps, overlaps (clipped to the range) and unfinished runs, in OBMT order.

    Overlaps are reported per pair of runs, so the error view names exactly which two
    solutions disagree; a sweep over the runs sorted by start finds them without
    comparing runs that are far apart.
    """
    ordered = sorted(runs, key=lambda r: (r.obmt_start_ns, r.obmt_end_ns, r.id))
    problems: list[Problem] = []
    cursor = start_ns
    for run in ordered:
        if run.obmt_start_ns > cursor and cursor < end_ns:
            problems.append(Problem(GAP, cursor, min(run.obmt_start_ns, end_ns), ()))
        cursor = max(cursor, run.obmt_end_ns)
    if cursor < end_ns:
        problems.append(Problem(GAP, cursor, end_ns, ()))

    active: list[RunRow] = []
    for run in ordered:
        active = [a for a in active if a.obmt_end_ns > run.obmt_start_ns]
        for other in active:
            lo = max(run.obmt_start_ns, other.obmt_start_ns, start_ns)
            hi = min(run.obmt_end_ns, other.obmt_end_ns, end_ns)
            if lo < hi:
                problems.append(Problem(OVERLAP, lo, hi, tuple(sorted((other.id, run.id)))))
        active.append(run)

    for run in ordered:
        if run.status != RunStatus.SUCCESS:
            lo, hi = max(run.obmt_start_ns, start_ns), min(run.obmt_end_ns, end_ns)
            problems.append(Problem(UNFINISHED, lo, hi, (run.id,)))
    problems.sort(key=lambda p: (p.start_ns, p.end_ns, p.kind, p.run_ids))
    return problems


def is_intermediate(data_type: str) -> bool:
    """Whether closure may delete a type's datasets; a type this process does not know is kept."""
    try:
        return DATA_TYPES.get(data_type).intermediate
    except UnknownDataType:
        return False


def intermediate_datasets(
    conn: Connection, run_ids: Sequence[int], intermediate: Callable[[str], bool]
) -> list[DatasetRow]:
    """Datasets not yet deleted that the runs' jobs produced, of intermediate types."""
    if not run_ids:
        return []
    d = datasets.c
    produced = (
        sa.select(datasets)
        .join(jobs, jobs.c.id == d.job_id)
        .join(workflows, workflows.c.id == jobs.c.workflow_id)
        .where(workflows.c.run_id.in_(list(run_ids)), d.state != DatasetState.DELETED)
    )
    kinds = conn.execute(sa.select(produced.subquery().c.data_type).distinct()).scalars()
    wanted = sorted(t for t in kinds if intermediate(t))
    if not wanted:
        return []
    query = produced.where(d.data_type.in_(wanted)).order_by(d.id)
    return [_dataset_row(r) for r in conn.execute(query)]


def check_closure(
    conn: Connection,
    sw: str,
    start_ns: int,
    end_ns: int,
    now: float,
    *,
    intermediate: Callable[[str], bool] = is_intermediate,
) -> ClosureResult:
    """Check ``[start_ns, end_ns)`` for ``sw``, store the check, and close it when OK."""
    candidates = runs_in_range(conn, sw, start_ns, end_ns)
    if refresh_run_status(conn, [r.id for r in candidates], now):
        candidates = runs_in_range(conn, sw, start_ns, end_ns)
    problems = find_problems(candidates, start_ns, end_ns)
    position = int(get_cursor(conn, DATA_CURSOR) or 0)
    d = datasets.c
    unseen = conn.execute(
        sa.select(sa.func.min(d.obmt_start_ns), sa.func.max(d.obmt_end_ns)).where(
            d.id > position, d.obmt_start_ns < end_ns, d.obmt_end_ns > start_ns
        )
    ).first()
    if unseen is not None and unseen[0] is not None:
        lo, hi = max(int(unseen[0]), start_ns), min(int(unseen[1]), end_ns)
        problems.append(Problem(PENDING, lo, hi, ()))
    w = workflows.c
    for lo, hi in conn.execute(
        sa.select(w.obmt_start_ns, w.obmt_end_ns).where(
            w.run_id.is_(None),
            w.status.in_([WorkflowStatus.NEW, WorkflowStatus.RUNNING]),
            w.obmt_start_ns < end_ns,
            w.obmt_end_ns > start_ns,
        )
    ):
        problems.append(Problem(ACTIVE, max(int(lo), start_ns), min(int(hi), end_ns), ()))
    ok = not problems
    check_id = int(
        conn.execute(
            sa.insert(run_checks)
            .values(
                sw=sw,
                start_check_ns=start_ns,
                end_check_ns=end_ns,
                check_status=CHECK_OK if ok else CHECK_ERROR,
                delete_status=SKIPPED,
                note="",
                created_at=now,
            )
            .returning(run_checks.c.id)
        ).scalar_one()
    )
    if problems:
        conn.execute(
            sa.insert(run_check_errors),
            [
                {
                    "check_id": check_id,
                    "kind": p.kind,
                    "obmt_start_ns": p.start_ns,
                    "obmt_end_ns": p.end_ns,
                    "run_ids": ",".join(map(str, p.run_ids)),
                }
                for p in problems
            ],
        )
    run_ids = [r.id for r in candidates]
    deleted: list[DatasetRow] = []
    if ok:
        found = intermediate_datasets(conn, run_ids, intermediate)
        why = f"intermediate data of {sw} runs closed by run check {check_id}"
        marked: set[int] = set()
        for state in (DatasetState.AVAILABLE, DatasetState.RETRACTED, DatasetState.SUPERSEDED):
            ids = [ds.id for ds in found if ds.state == state]
            for first in range(0, len(ids), _BATCH):
                marked.update(
                    mark_deleted(conn, ids[first : first + _BATCH], now, why, from_state=state)
                )
        deleted = [ds for ds in found if ds.id in marked]
        mark_runs_closed(conn, run_ids, now, check_id)
        ids_text = ", ".join(map(str, run_ids))
        note = (
            f"{len(run_ids)} runs closed ({ids_text}); {len(deleted)} intermediate datasets deleted"
        )
        delete_status = DELETED if deleted else NOTHING
    else:
        counts = {
            k: sum(p.kind == k for p in problems)
            for k in (GAP, OVERLAP, UNFINISHED, PENDING, ACTIVE)
        }
        note = ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n)
        note += f"; nothing deleted (see `dpct closure errors {check_id}`)"
        delete_status = SKIPPED
    conn.execute(
        sa.update(run_checks)
        .where(run_checks.c.id == check_id)
        .values(note=note, delete_status=delete_status)
    )
    kind = "closure.ok" if ok else "closure.error"
    add_events(
        conn, now, [("DSS", kind, "run_check", check_id, f"{sw} [{start_ns}, {end_ns}): {note}")]
    )
    check = get_check(conn, check_id)
    assert check is not None
    return ClosureResult(check, check_errors(conn, check_id), run_ids if ok else [], deleted)


def get_check(conn: Connection, check_id: int) -> RunCheckRow | None:
    row = conn.execute(sa.select(run_checks).where(run_checks.c.id == check_id)).first()
    return RunCheckRow(**row._mapping) if row else None


def list_checks(
    conn: Connection, *, sw: str | None = None, how_many: int = 100
) -> list[RunCheckRow]:
    """Closure checks, newest first."""
    query = sa.select(run_checks).order_by(run_checks.c.id.desc()).limit(how_many)
    if sw:
        query = query.where(run_checks.c.sw == sw)
    return [RunCheckRow(**r._mapping) for r in conn.execute(query)]


def check_errors(conn: Connection, check_id: int) -> list[RunCheckErrorRow]:
    """The error view of one check, in OBMT order."""
    e = run_check_errors.c
    query = (
        sa.select(run_check_errors)
        .where(e.check_id == check_id)
        .order_by(e.obmt_start_ns, e.obmt_end_ns, e.id)
    )
    return [
        RunCheckErrorRow(
            id=r.id,
            check_id=r.check_id,
            kind=r.kind,
            obmt_start_ns=r.obmt_start_ns,
            obmt_end_ns=r.obmt_end_ns,
            run_ids=tuple(int(i) for i in r.run_ids.split(",") if i),
        )
        for r in conn.execute(query)
    ]
