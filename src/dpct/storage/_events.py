"""Event rows: written in the same transaction as the change they describe (outbox)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._records import EventRow
from dpct.storage._schema import events

EventTuple = tuple[str, str, str, object, str]
"""(subsystem, kind, object_type, object_id, message)."""

_INSERT = events.insert()


def add_events(conn: Connection, now: float, items: Iterable[EventTuple]) -> None:
    rows = [
        {
            "time": now,
            "subsystem": subsystem,
            "kind": kind,
            "object_type": object_type,
            "object_id": str(object_id),
            "message": message,
        }
        for subsystem, kind, object_type, object_id, message in items
    ]
    if rows:
        conn.execute(_INSERT, rows)


def list_events(
    conn: Connection,
    *,
    limit: int = 100,
    kind: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    after_id: int = 0,
    newest_first: bool = True,
) -> Sequence[EventRow]:
    query = sa.select(events).where(events.c.id > after_id)
    if kind:
        query = query.where(
            events.c.kind.like(kind.replace("*", "%")) if "*" in kind else events.c.kind == kind
        )
    if object_type:
        query = query.where(events.c.object_type == object_type)
    if object_id is not None:
        query = query.where(events.c.object_id == str(object_id))
    query = query.order_by(events.c.id.desc() if newest_first else events.c.id).limit(limit)
    return [EventRow(**row._mapping) for row in conn.execute(query)]
