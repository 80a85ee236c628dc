"""Run check closure: do a pipeline's runs tile an OBMT range exactly, and may they close?

Runs are half-open intervals, so ``[a, b)`` followed by ``[b, c)`` tiles without gap or
overlap. A range is closed only when the runs of one pipeline (minus those an operator
ignored) cover it once and for all: no part uncovered (a GAP), no part covered twice
(an OVERLAP, two solutions for the same data), and every run ended in SUCCESS (an
UNFINISHED run may still need its intermediate data, to resume failed jobs).

A run must also be complete: every part of its own period covered by one of its
workflows (INCOMPLETE otherwise: a week run holding three daily workflows has four days
still to come, and closing it now would make those days a second, overlapping run). An
operator who knows better passes ``force``, which lets INCOMPLETE runs close and says so
in the check's note; every other problem still blocks.

What a check would do is computed first, as a :class:`ClosurePlan`, by a read-only
function; ``dpct closure check --dry-run`` shows that plan and the real check executes
the very same plan in its transaction, so the preview is the action.

Closing deletes the runs' intermediate data in two phases: the rows are marked DELETED
in the check's transaction, and the caller removes the files after the commit. A crash
in between leaves an orphan file, never a row that points at nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.datamodel import DATA_TYPES
from dpct.errors import Conflict, UnknownDataType
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
from dpct.storage._runs import (
    derive_run_status,
    mark_runs_closed,
    refresh_run_status,
    run_workflows,
    runs_in_range,
)
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
INCOMPLETE = "INCOMPLETE"
"""A part of a run's period that none of its workflows covers: data still to come."""
KINDS = (GAP, OVERLAP, UNFINISHED, PENDING, ACTIVE, INCOMPLETE)

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
class ClosurePlan:
    """What checking ``[start_ns, end_ns)`` would find and do, before anything changes."""

    sw: str
    start_ns: int
    end_ns: int
    runs: list[RunRow]
    """The runs in the range, not ignored, with the status their workflows imply."""
    problems: list[Problem]
    """What blocks closure; empty when the runs may close."""
    forced: list[Problem]
    """INCOMPLETE runs that ``force`` lets close anyway (recorded in the check's note)."""
    deleting: list[DatasetRow]
    """Intermediate datasets closing deletes: empty when a problem blocks closure."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def closing(self) -> list[int]:
        """The runs closing closes: all of them, or none."""
        return [r.id for r in self.runs] if self.ok else []

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.deleting)

    def action(self) -> tuple[list[int], list[int]]:
        """What executing the plan changes: the runs closed and the datasets deleted."""
        return self.closing, [d.id for d in self.deleting]

    def by_type(self) -> dict[str, tuple[int, int]]:
        """Data type → (datasets, bytes) of what closing deletes."""
        out: dict[str, tuple[int, int]] = {}
        for d in self.deleting:
            n, size = out.get(d.spec.data_type, (0, 0))
            out[d.spec.data_type] = (n + 1, size + d.bytes)
        return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class ClosureResult:
    check: RunCheckRow
    errors: list[RunCheckErrorRow]
    closed_runs: list[int]
    deleted: list[DatasetRow]
    """Datasets marked DELETED; their files are the caller's to remove after the commit."""
    plan: ClosurePlan
    """The plan the check executed (what ``--dry-run`` shows)."""


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


def uncovered(
    start_ns: int, end_ns: int, spans: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The parts of ``[start_ns, end_ns)`` that none of ``spans`` covers."""
    out: list[tuple[int, int]] = []
    cursor = start_ns
    for lo, hi in sorted(spans):
        if lo > cursor and cursor < end_ns:
            out.append((cursor, min(lo, end_ns)))
        cursor = max(cursor, hi)
    if cursor < end_ns:
        out.append((cursor, end_ns))
    return out


def incomplete_runs(
    runs: Sequence[RunRow], coverage: dict[int, list[tuple[int, int]]]
) -> list[Problem]:
    """The parts of each run's period that none of its workflows covers.

    A run without workflows (work done outside dpct, its status set by hand) is taken as
    its operator declared it. The parts are the run's own, not clipped to the checked
    range: closing closes whole runs.
    """
    return [
        Problem(INCOMPLETE, lo, hi, (run.id,))
        for run in runs
        if coverage.get(run.id)
        for lo, hi in uncovered(run.obmt_start_ns, run.obmt_end_ns, coverage[run.id])
    ]


def workflow_coverage(conn: Connection, run_ids: Sequence[int]) -> dict[int, list[tuple[int, int]]]:
    """The OBMT intervals of each run's workflows."""
    out: dict[int, list[tuple[int, int]]] = {}
    if not run_ids:
        return out
    w = workflows.c
    query = sa.select(w.run_id, w.obmt_start_ns, w.obmt_end_ns).where(w.run_id.in_(list(run_ids)))
    for run_id, lo, hi in conn.execute(query):
        out.setdefault(int(run_id), []).append((int(lo), int(hi)))
    return out


def is_intermediate(data_type: str) -> bool:
    """Whether closure may delete a type's datasets; a type this process does not know is kept."""
    try:
        return DATA_TYPES.get(data_type).intermediate
    except UnknownDataType:
        return False


def intermediate_datasets(
    conn: Connection,
    run_ids: Sequence[int],
    intermediate: Callable[[str], bool],
    *,
    deleted: bool = False,
) -> list[DatasetRow]:
    """Datasets not yet deleted that the runs' jobs produced, of intermediate types
    (with ``deleted``, the DELETED ones too: what a reopened run has lost)."""
    if not run_ids:
        return []
    d = datasets.c
    produced = (
        sa.select(datasets)
        .join(jobs, jobs.c.id == d.job_id)
        .join(workflows, workflows.c.id == jobs.c.workflow_id)
        .where(workflows.c.run_id.in_(list(run_ids)))
    )
    if not deleted:
        produced = produced.where(d.state != DatasetState.DELETED)
    kinds = conn.execute(sa.select(produced.subquery().c.data_type).distinct()).scalars()
    wanted = sorted(t for t in kinds if intermediate(t))
    if not wanted:
        return []
    query = produced.where(d.data_type.in_(wanted)).order_by(d.id)
    return [_dataset_row(r) for r in conn.execute(query)]


def plan_closure(
    conn: Connection,
    sw: str,
    start_ns: int,
    end_ns: int,
    *,
    force: bool = False,
    intermediate: Callable[[str], bool] = is_intermediate,
) -> ClosurePlan:
    """What a check of ``[start_ns, end_ns)`` for ``sw`` would find and delete; reads only.

    Run statuses are derived from their workflows here, not read as stored, so a dry
    run and the check (which stores them first) see the same runs.
    """
    stored = runs_in_range(conn, sw, start_ns, end_ns)
    linked = run_workflows(conn, [r.id for r in stored])
    candidates = [
        dataclasses.replace(r, status=derive_run_status((s for _, s in linked[r.id]), r.status))
        for r in stored
    ]
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
    run_ids = [r.id for r in candidates]
    incomplete = incomplete_runs(candidates, workflow_coverage(conn, run_ids))
    forced = incomplete if force else []
    if not force:
        problems.extend(incomplete)
    deleting = [] if problems else intermediate_datasets(conn, run_ids, intermediate)
    return ClosurePlan(sw, start_ns, end_ns, candidates, problems, forced, deleting)


def _forced_note(forced: Sequence[Problem]) -> str:
    if not forced:
        return ""
    runs = sorted({i for p in forced for i in p.run_ids})
    spans = ", ".join(f"[{p.start_ns}, {p.end_ns})" for p in forced)
    return f"; forced: closed incomplete runs {', '.join(map(str, runs))} (uncovered {spans})"


def check_closure(
    conn: Connection,
    sw: str,
    start_ns: int,
    end_ns: int,
    now: float,
    *,
    force: bool = False,
    expect: ClosurePlan | None = None,
    intermediate: Callable[[str], bool] = is_intermediate,
) -> ClosureResult:
    """Check ``[start_ns, end_ns)`` for ``sw``, store the check, and close it when OK.

    With ``expect`` (the plan an operator was shown and agreed to), a plan that would
    now close other runs or delete other datasets is refused, and nothing changes.
    """
    refresh_run_status(conn, [r.id for r in runs_in_range(conn, sw, start_ns, end_ns)], now)
    plan = plan_closure(conn, sw, start_ns, end_ns, force=force, intermediate=intermediate)
    if expect is not None and expect.action() != plan.action():
        raise Conflict(
            f"the runs or data of {sw} [{start_ns}, {end_ns}) changed since the preview; "
            "nothing was closed or deleted: check again"
        )
    problems = plan.problems
    ok = plan.ok
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
    run_ids = plan.closing
    deleted: list[DatasetRow] = []
    if ok:
        found = plan.deleting
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
            + _forced_note(plan.forced)
        )
        delete_status = DELETED if deleted else NOTHING
    else:
        counts = {k: sum(p.kind == k for p in problems) for k in KINDS}
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
    return ClosureResult(check, check_errors(conn, check_id), run_ids, deleted, plan)


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
