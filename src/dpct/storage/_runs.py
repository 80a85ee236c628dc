"""Runs: a pipeline's processing of an OBMT range, the workflows doing it, its status.

A run is what run check closure reasons about: the runs of one pipeline must tile the
mission's time line without gaps or overlaps before their intermediate data may go.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._aim_runs import refresh_aim_runs
from dpct.storage._database import serialize_on
from dpct.storage._events import add_events
from dpct.storage._records import (
    ENDED_RUN_STATES,
    RunRow,
    RunStatus,
    WorkflowStatus,
)
from dpct.storage._schema import runs, workflows

_ACTIVE_WORKFLOWS = frozenset({WorkflowStatus.NEW, WorkflowStatus.RUNNING})
_GOOD_WORKFLOWS = frozenset({WorkflowStatus.SUCCESS, WorkflowStatus.PARTIALLYSUCCESS})


def insert_run(
    conn: Connection, *, sw: str, start_ns: int, end_ns: int, now: float, note: str = ""
) -> int:
    run_id = int(
        conn.execute(
            sa.insert(runs)
            .values(
                sw=sw,
                obmt_start_ns=start_ns,
                obmt_end_ns=end_ns,
                status=RunStatus.DEFINED,
                closed=False,
                ignored=False,
                note=note,
                created_at=now,
            )
            .returning(runs.c.id)
        ).scalar_one()
    )
    add_events(
        conn, now, [("RMS", "run.defined", "run", run_id, f"{sw} [{start_ns}, {end_ns}) {note}")]
    )
    refresh_aim_runs(conn, [run_id], now)
    return run_id


def join_run(conn: Connection, *, sw: str, start_ns: int, period_ns: int, now: float) -> int:
    """The open run of ``sw`` over the aligned period holding ``start_ns``; defined if none.

    Aligned periods of one length tile the time line, so the runs a descriptor's
    workflows join pass closure by construction. A closed or ignored run of the same
    period is not reused: work after closure starts a new run, which closure will then
    report as an overlap for an operator to settle.
    """
    lo = start_ns - start_ns % period_ns
    hi = lo + period_ns
    serialize_on(conn, f"run:{sw}:{lo}:{hi}")  # a trigger and a submit define one run, not two
    r = runs.c
    found = conn.execute(
        sa.select(r.id)
        .where(
            r.sw == sw,
            r.obmt_start_ns == lo,
            r.obmt_end_ns == hi,
            r.closed.is_(False),
            r.ignored.is_(False),
        )
        .order_by(r.id.desc())
        .limit(1)
    ).scalar()
    if found is not None:
        return int(found)
    return insert_run(conn, sw=sw, start_ns=lo, end_ns=hi, now=now, note="defined by a workflow")


def _run_row(row: sa.Row, workflow_ids: Sequence[int] = ()) -> RunRow:
    return RunRow(**row._mapping, workflow_ids=tuple(workflow_ids))


def run_workflows(conn: Connection, run_ids: Iterable[int]) -> dict[int, list[tuple[int, str]]]:
    """(workflow id, status) of each run's workflows, in id order."""
    ids = sorted(set(run_ids))
    out: dict[int, list[tuple[int, str]]] = {i: [] for i in ids}
    if not ids:
        return out
    w = workflows.c
    query = sa.select(w.run_id, w.id, w.status).where(w.run_id.in_(ids)).order_by(w.id)
    for run_id, wf_id, status in conn.execute(query):
        out[int(run_id)].append((int(wf_id), status))
    return out


def _with_workflows(conn: Connection, rows: Sequence[sa.Row]) -> list[RunRow]:
    linked = run_workflows(conn, (r.id for r in rows))
    return [_run_row(r, [wf for wf, _ in linked[r.id]]) for r in rows]


def get_run(conn: Connection, run_id: int) -> RunRow | None:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    return _with_workflows(conn, [row])[0] if row else None


def list_runs(
    conn: Connection,
    *,
    sw: str | None = None,
    how_many: int = 500,
    before_id: int | None = None,
) -> list[RunRow]:
    """Runs, newest first."""
    query = sa.select(runs).order_by(runs.c.id.desc()).limit(how_many)
    if sw:
        query = query.where(runs.c.sw == sw)
    if before_id is not None:
        query = query.where(runs.c.id < before_id)
    return _with_workflows(conn, conn.execute(query).all())


def runs_in_range(conn: Connection, sw: str, start_ns: int, end_ns: int) -> list[RunRow]:
    """The runs of ``sw`` intersecting ``[start_ns, end_ns)`` that are not ignored, by OBMT."""
    r = runs.c
    query = (
        sa.select(runs)
        .where(
            r.sw == sw,
            r.ignored.is_(False),
            r.obmt_start_ns < end_ns,
            r.obmt_end_ns > start_ns,
        )
        .order_by(r.obmt_start_ns, r.obmt_end_ns, r.id)
    )
    return _with_workflows(conn, conn.execute(query).all())


def attach_workflows(
    conn: Connection, run_id: int, workflow_ids: Iterable[int], now: float
) -> list[int]:
    """Point workflows at a run (a workflow belongs to one run: the last one wins)."""
    ids = sorted(set(workflow_ids))
    if not ids:
        return []
    conn.execute(sa.update(workflows).where(workflows.c.id.in_(ids)).values(run_id=run_id))
    add_events(
        conn,
        now,
        [("RMS", "run.workflows", "run", run_id, f"workflows {', '.join(map(str, ids))}")],
    )
    refresh_run_status(conn, [run_id], now)
    return ids


def derive_run_status(workflow_statuses: Iterable[str], current: str) -> str:
    """A run's status from its workflows'; a run without workflows keeps its own."""
    statuses = list(workflow_statuses)
    if not statuses:
        return current
    if any(s in _ACTIVE_WORKFLOWS for s in statuses):
        return RunStatus.RUNNING
    if all(s == WorkflowStatus.SUCCESS for s in statuses):
        return RunStatus.SUCCESS
    if any(s in _GOOD_WORKFLOWS for s in statuses):
        return RunStatus.PARTIALLYSUCCESS
    return RunStatus.FAILED


def set_run_status(conn: Connection, run_id: int, status: str, now: float) -> bool:
    """Store a status (ended ones get ``ended_at``); returns whether it changed."""
    current = conn.execute(sa.select(runs.c.status).where(runs.c.id == run_id)).scalar()
    if current is None or current == status:
        return False
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(status=status, ended_at=now if status in ENDED_RUN_STATES else None)
    )
    add_events(
        conn, now, [("RMS", f"run.{status.lower()}", "run", run_id, f"{current} → {status}")]
    )
    return True


def refresh_run_status(conn: Connection, run_ids: Iterable[int], now: float) -> dict[int, str]:
    """Re-derive the stored status of runs with workflows; returns the ones that changed."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    query = sa.select(runs.c.id, runs.c.status).where(runs.c.id.in_(ids)).order_by(runs.c.id)
    if conn.dialect.name == "postgresql":
        # Two workflows of a run ending in parallel transactions: the second waits here
        # and then (read committed) sees the first's workflow status, so the last one
        # to commit stores the run's final status.
        query = query.with_for_update()
    current = dict(conn.execute(query).all())
    linked = run_workflows(conn, ids)
    changed: dict[int, str] = {}
    for run_id, status in sorted(current.items()):
        new = derive_run_status((s for _, s in linked[run_id]), status)
        if set_run_status(conn, run_id, new, now):
            changed[run_id] = new
    refresh_aim_runs(conn, ids, now)
    return changed


def set_run_ignored(conn: Connection, run_id: int, ignored: bool, now: float, note: str) -> None:
    values: dict[str, object] = {"ignored": ignored}
    if note:
        values["note"] = note
    conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
    kind = "run.ignored" if ignored else "run.unignored"
    add_events(conn, now, [("RMS", kind, "run", run_id, note)])


def mark_runs_closed(conn: Connection, run_ids: Iterable[int], now: float, check_id: int) -> None:
    ids = sorted(set(run_ids))
    if not ids:
        return
    conn.execute(sa.update(runs).where(runs.c.id.in_(ids)).values(closed=True))
    add_events(
        conn, now, [("DSS", "run.closed", "run", i, f"by run check {check_id}") for i in ids]
    )


def reopen_closed_run(conn: Connection, run_id: int, now: float, note: str) -> None:
    """Take a closed run back: open again, so the workflows of its period join it.

    Its status stays the one its workflows imply. The caller says in ``note`` what
    closure deleted, which reopening cannot bring back.
    """
    conn.execute(sa.update(runs).where(runs.c.id == run_id).values(closed=False, note=note))
    add_events(conn, now, [("RMS", "run.reopened", "run", run_id, note)])
    refresh_run_status(conn, [run_id], now)
