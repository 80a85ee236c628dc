"""Trigger bookkeeping: at-most-once firings and named cursors."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._schema import cursors, trigger_firings


def claim_firing(conn: Connection, descriptor: str, key: str, now: float) -> int | None:
    """Reserve the firing ``(descriptor, key)``; None if it already fired.

    The unique constraint makes this safe when two coordinators race.
    """
    exists = conn.execute(
        sa.select(trigger_firings.c.id).where(
            trigger_firings.c.descriptor == descriptor, trigger_firings.c.key == key
        )
    ).first()
    if exists:
        return None
    return int(
        conn.execute(
            sa.insert(trigger_firings)
            .values(descriptor=descriptor, key=key, fired_at=now)
            .returning(trigger_firings.c.id)
        ).scalar_one()
    )


def record_firing_workflow(conn: Connection, firing_id: int, workflow_id: int) -> None:
    conn.execute(
        sa.update(trigger_firings)
        .where(trigger_firings.c.id == firing_id)
        .values(workflow_id=workflow_id)
    )


DATA_CURSOR = "data-triggers"
"""The id of the last dataset the data triggers have evaluated."""


def get_cursor(conn: Connection, name: str) -> float | None:
    return conn.execute(sa.select(cursors.c.position).where(cursors.c.name == name)).scalar()


def set_cursor(conn: Connection, name: str, position: float) -> None:
    updated = conn.execute(
        sa.update(cursors).where(cursors.c.name == name).values(position=position)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(cursors).values(name=name, position=position))
