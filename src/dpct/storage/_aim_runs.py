"""The AimRun table: what an AIM run has processed, what it still has to, what it made.

An AIM run's SOLUTIONIDSPROCESSED are the solution ids of the ``af_windows`` datasets its
jobs read; SOLUTIONIDSTOBEPROCESSED those of the available ``af_windows`` over its range
that no job of it has read yet (a delivery that came late, a failed chunk); SOLUTIONID
is the solution of the newest LSF calibration it produced, the one the next run starts
from. The stored row is recomputed with the run's status (workflow changes, closure);
readers get it computed afresh, since deliveries change it without touching the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._records import AimRunRow, DatasetState, RunRow, WorkflowStatus
from dpct.storage._schema import (
    aim_runs,
    datasets,
    jobs,
    runs,
    solution_inputs,
    solutions,
    workflows,
)

AIM = "AIM"
WINDOWS = "af_windows"
CALIBRATION = "aim_lsf_calibration"
_ACTIVE = (WorkflowStatus.NEW, WorkflowStatus.RUNNING)


def _ids_text(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in sorted(set(ids)))


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(i) for i in text.split(",") if i)


def refresh_aim_runs(conn: Connection, run_ids: Iterable[int], now: float) -> None:
    """Recompute the AimRun rows of the AIM runs among ``run_ids`` (others are ignored)."""
    ids = sorted(set(run_ids))
    if not ids:
        return
    r = runs.c
    for run_id, start, end in conn.execute(
        sa.select(r.id, r.obmt_start_ns, r.obmt_end_ns).where(r.id.in_(ids), r.sw == AIM)
    ):
        values = _compute(conn, int(run_id), int(start), int(end))
        values["updated_at"] = now
        updated = conn.execute(
            sa.update(aim_runs).where(aim_runs.c.run_id == run_id).values(**values)
        ).rowcount
        if not updated:
            conn.execute(sa.insert(aim_runs).values(run_id=run_id, **values))


def _compute(conn: Connection, run_id: int, start: int, end: int) -> dict[str, object]:
    w, j, s, si, d = workflows.c, jobs.c, solutions.c, solution_inputs.c, datasets.c
    run_jobs = sa.select(j.id).join(workflows, w.id == j.workflow_id).where(w.run_id == run_id)
    active = conn.execute(
        sa.select(sa.func.count()).where(w.run_id == run_id, w.status.in_(_ACTIVE))
    ).scalar_one()
    processed = set(
        conn.execute(
            sa.select(si.input_solution_id)
            .join(solutions, s.id == si.solution_id)
            .where(s.job_id.in_(run_jobs), si.input_type == WINDOWS)
            .distinct()
        ).scalars()
    )
    available = set(
        conn.execute(
            sa.select(d.solution_id).where(
                d.data_type == WINDOWS,
                d.state == DatasetState.AVAILABLE,
                d.obmt_start_ns < end,
                d.obmt_end_ns > start,
                d.solution_id.is_not(None),
            )
        ).scalars()
    )
    calibration = conn.execute(
        sa.select(d.solution_id)
        .where(d.data_type == CALIBRATION, d.job_id.in_(run_jobs))
        .order_by(d.id.desc())
        .limit(1)
    ).scalar()
    return {
        "active_processing": bool(active),
        "solution_id": calibration,
        "solution_ids_processed": _ids_text(processed),
        "solution_ids_to_be_processed": _ids_text(available - processed),
    }


def aim_run_rows(conn: Connection, run_rows: Sequence[RunRow]) -> list[AimRunRow]:
    """The AimRun view of AIM runs, computed now: a delivery registered or retracted
    since the stored row was last refreshed shows at once."""
    out = []
    for run in run_rows:
        values = _compute(conn, run.id, run.obmt_start_ns, run.obmt_end_ns)
        out.append(
            AimRunRow(
                run=run,
                active_processing=bool(values["active_processing"]),
                solution_id=values["solution_id"],  # type: ignore[arg-type]
                solution_ids_processed=_ids(str(values["solution_ids_processed"])),
                solution_ids_to_be_processed=_ids(str(values["solution_ids_to_be_processed"])),
            )
        )
    return out
