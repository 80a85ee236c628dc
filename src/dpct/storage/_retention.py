"""Retention: how long each data type's files are kept, and which datasets are due.

Deleting is two-phase: rows are marked DELETED in a transaction first, the files go
after the commit. A crash in between leaves an orphan file, never a row that points
at nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._records import DatasetRow, DatasetState
from dpct.storage._schema import datasets, retention_rules

DAY_S = 86_400.0


def set_retention(conn: Connection, data_type: str, keep_days: float | None) -> None:
    """Keep ``data_type``'s files ``keep_days`` after registration; None keeps them forever."""
    conn.execute(sa.delete(retention_rules).where(retention_rules.c.data_type == data_type))
    if keep_days is not None:
        conn.execute(sa.insert(retention_rules).values(data_type=data_type, keep_days=keep_days))


def list_retention(conn: Connection) -> dict[str, float]:
    rows = conn.execute(sa.select(retention_rules).order_by(retention_rules.c.data_type))
    return {r.data_type: r.keep_days for r in rows}


def due_for_deletion(conn: Connection, now: float, limit: int = 10_000) -> list[DatasetRow]:
    """Available (or superseded) datasets older than their type's retention, oldest first."""
    d, r = datasets.c, retention_rules.c
    query = (
        sa.select(datasets)
        .join(retention_rules, r.data_type == d.data_type)
        .where(
            d.state.in_([DatasetState.AVAILABLE, DatasetState.SUPERSEDED]),
            d.created_at < now - r.keep_days * DAY_S,
        )
        .order_by(d.created_at, d.id)
        .limit(limit)
    )
    return [_dataset_row(row) for row in conn.execute(query)]


def mark_deleted(
    conn: Connection, dataset_ids: list[int], now: float, why: str, *, from_state: str
) -> list[int]:
    """Mark datasets DELETED (only those still in ``from_state``); returns those marked."""
    if not dataset_ids:
        return []
    d = datasets.c
    marked = [
        int(i)
        for (i,) in conn.execute(
            sa.update(datasets)
            .where(d.id.in_(dataset_ids), d.state == from_state)
            .values(state=DatasetState.DELETED, deleted_at=now)
            .returning(d.id)
        )
    ]
    add_events(conn, now, [("DSS", "dataset.deleted", "dataset", i, why) for i in marked])
    return sorted(marked)
