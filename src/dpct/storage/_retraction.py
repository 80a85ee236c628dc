"""Retraction: withdraw datasets found to be wrong, and everything made from them.

A retracted dataset stops being an input at once (inputs are read from AVAILABLE
datasets only) but keeps its file until the cleaning workflow deletes it; its row stays
for good, so the lineage of what was withdrawn, and why, can still be traced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._records import DatasetRow, DatasetState
from dpct.storage._schema import datasets, jobs, solution_inputs

_BATCH = 5_000
"""Ids per IN list: SQLite allows 32,766 bound parameters in one statement."""


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for first in range(0, len(ids), _BATCH):
        yield list(ids[first : first + _BATCH])


def descendant_solutions(conn: Connection, solution_ids: Iterable[int]) -> set[int]:
    """Every solution id made, directly or not, from any of ``solution_ids`` (not them).

    One recursive CTE per batch of seeds; UNION drops repeats, so diamonds are walked
    once.
    """
    seeds = sorted(set(solution_ids))
    link = solution_inputs.c
    found: set[int] = set()
    for batch in _chunks(seeds):
        walk = (
            sa.select(link.solution_id.label("sid"))
            .where(link.input_solution_id.in_(batch))
            .cte("walk", recursive=True)
        )
        walk = walk.union(sa.select(link.solution_id).where(link.input_solution_id == walk.c.sid))
        found.update(int(s) for (s,) in conn.execute(sa.select(walk.c.sid)))
    return found


def dataset_states(conn: Connection, dataset_ids: Iterable[int]) -> dict[int, str]:
    """The state of each of these datasets that exists."""
    out: dict[int, str] = {}
    for batch in _chunks(sorted(set(dataset_ids))):
        query = sa.select(datasets.c.id, datasets.c.state).where(datasets.c.id.in_(batch))
        out.update((int(i), s) for i, s in conn.execute(query))
    return out


def retraction_targets(
    conn: Connection, dataset_ids: Iterable[int]
) -> tuple[list[DatasetRow], set[int]]:
    """The AVAILABLE datasets retracting these would mark, and which of them were named.

    Derived means: carrying a solution id descended from one of theirs. Only AVAILABLE
    datasets change: a DELETED one stays deleted, and one already RETRACTED keeps its
    first retraction time. Reads only, so a dry run shows exactly what :func:`retract`
    then marks.
    """
    asked = sorted(set(dataset_ids))
    d = datasets.c
    seeds: set[int] = set()
    for batch in _chunks(asked):
        query = sa.select(d.solution_id).where(d.id.in_(batch), d.solution_id.is_not(None))
        seeds.update(int(s) for (s,) in conn.execute(query))
    derived = sorted(descendant_solutions(conn, seeds))
    found: dict[int, DatasetRow] = {}
    available = d.state == DatasetState.AVAILABLE
    for batch in _chunks(asked):
        for row in conn.execute(sa.select(datasets).where(d.id.in_(batch), available)):
            found[row.id] = _dataset_row(row)
    direct = set(found)
    for batch in _chunks(derived):
        for row in conn.execute(sa.select(datasets).where(d.solution_id.in_(batch), available)):
            found.setdefault(row.id, _dataset_row(row))
    return [found[i] for i in sorted(found)], direct


def mark_retracted(
    conn: Connection,
    asked: Sequence[int],
    targets: Sequence[DatasetRow],
    direct: set[int],
    now: float,
    reason: str,
) -> list[int]:
    """Mark ``targets`` (from :func:`retraction_targets`) RETRACTED; returns those marked.

    Each marked dataset gets a ``dataset.retracted`` event; one that another transaction
    changed meanwhile (no longer AVAILABLE) is left alone.
    """
    d = datasets.c
    marked: set[int] = set()
    for batch in _chunks([t.id for t in targets]):
        query = (
            sa.update(datasets)
            .where(d.id.in_(batch), d.state == DatasetState.AVAILABLE)
            .values(state=DatasetState.RETRACTED, retracted_at=now)
            .returning(d.id)
        )
        marked.update(int(i) for (i,) in conn.execute(query))
    names = sorted(set(asked))
    origin = ("datasets " if len(names) > 1 else "dataset ") + ", ".join(map(str, names))
    add_events(
        conn,
        now,
        [
            (
                "DSS",
                "dataset.retracted",
                "dataset",
                i,
                reason if i in direct else f"derived from retracted {origin}: {reason}",
            )
            for i in sorted(marked)
        ],
    )
    return sorted(marked)


def job_log_paths(conn: Connection, job_ids: Iterable[int]) -> dict[int, str]:
    """The log file of each of these jobs that has one (report files are written beside it)."""
    out: dict[int, str] = {}
    for batch in _chunks(sorted(set(job_ids))):
        query = sa.select(jobs.c.id, jobs.c.log_path).where(
            jobs.c.id.in_(batch), jobs.c.log_path.is_not(None)
        )
        out.update((int(i), str(path)) for i, path in conn.execute(query) if path)
    return out


def retracted_datasets(
    conn: Connection, start_ns: int | None = None, end_ns: int | None = None
) -> list[DatasetRow]:
    """RETRACTED datasets of any type overlapping ``[start_ns, end_ns)`` (all without it)."""
    d = datasets.c
    query = sa.select(datasets).where(d.state == DatasetState.RETRACTED).order_by(d.id)
    if start_ns is not None:
        query = query.where(d.obmt_end_ns > start_ns)
    if end_ns is not None:
        query = query.where(d.obmt_start_ns < end_ns)
    return [_dataset_row(r) for r in conn.execute(query)]


def retracted_hull(conn: Connection, dataset_ids: Iterable[int]) -> tuple[int, int] | None:
    """The OBMT interval spanning those of these datasets still RETRACTED, if any."""
    d = datasets.c
    lo: int | None = None
    hi: int | None = None
    for batch in _chunks(sorted(set(dataset_ids))):
        query = sa.select(sa.func.min(d.obmt_start_ns), sa.func.max(d.obmt_end_ns)).where(
            d.id.in_(batch), d.state == DatasetState.RETRACTED
        )
        start, end = conn.execute(query).one()
        if start is not None:
            lo = start if lo is None else min(lo, start)
            hi = end if hi is None else max(hi, end)
    return None if lo is None or hi is None else (int(lo), int(hi))


def producing_workflows(conn: Connection, job_ids: Iterable[int]) -> set[int]:
    """The workflows of these jobs."""
    out: set[int] = set()
    for batch in _chunks(sorted(set(job_ids))):
        query = sa.select(jobs.c.workflow_id).where(jobs.c.id.in_(batch)).distinct()
        out.update(int(w) for w in conn.execute(query).scalars())
    return out
