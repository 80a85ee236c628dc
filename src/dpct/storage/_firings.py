"""Trigger bookkeeping: at-most-once firings and named cursors."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from dpct.storage._schema import cursors, trigger_firings, workflows


def claim_firing(conn: Connection, descriptor: str, key: str, now: float) -> int | None:
    """Reserve the firing ``(descriptor, key)``; None if it already fired.

    One statement that inserts unless the key exists (ON CONFLICT DO NOTHING): when two
    coordinators, or a coordinator and a submit, race for the same firing, the second
    waits for the first's commit and then finds it made. A firing made by someone else
    is the normal outcome of that race, not an error.
    """
    statement = (
        _insert(conn, trigger_firings)
        .values(descriptor=descriptor, key=key, fired_at=now)
        .on_conflict_do_nothing(index_elements=["descriptor", "key"])
        .returning(trigger_firings.c.id)
    )
    claimed = conn.execute(statement).scalar()
    return None if claimed is None else int(claimed)


def record_firing_workflow(conn: Connection, firing_id: int, workflow_id: int) -> None:
    conn.execute(
        sa.update(trigger_firings)
        .where(trigger_firings.c.id == firing_id)
        .values(workflow_id=workflow_id)
    )


def fired(
    conn: Connection, descriptor: str, keys: Iterable[str]
) -> list[tuple[str, int | None, str | None]]:
    """(key, workflow, its status) of those of ``keys`` that ``descriptor`` has fired."""
    wanted = sorted(set(keys))
    if not wanted:
        return []
    f = trigger_firings.c
    query = (
        sa.select(f.key, f.workflow_id, workflows.c.status)
        .outerjoin(workflows, workflows.c.id == f.workflow_id)
        .where(f.descriptor == descriptor, f.key.in_(wanted))
        .order_by(f.key)
    )
    return [(str(k), None if w is None else int(w), s) for k, w, s in conn.execute(query)]


def release_firings(conn: Connection, descriptor: str, keys: Iterable[str]) -> int:
    """Let ``(descriptor, key)`` fire again; the firing stays, under a key marked released.

    A firing records that its trigger's condition held (an interval was covered); once
    retracted data uncover the interval again, the next delivery covering it must fire.
    Keeping the row, renamed ``<key>#released:<id>``, keeps the workflow it started.
    """
    f = trigger_firings.c
    wanted = sorted(set(keys))
    if not wanted:
        return 0
    rows = conn.execute(
        sa.select(f.id, f.key).where(f.descriptor == descriptor, f.key.in_(wanted))
    ).all()
    for firing_id, key in rows:
        conn.execute(
            sa.update(trigger_firings)
            .where(f.id == firing_id)
            .values(key=f"{key}#released:{firing_id}")
        )
    return len(rows)


DATA_CURSOR = "data-triggers"
"""The id of the last dataset the data triggers have evaluated."""


def get_cursor(conn: Connection, name: str) -> float | None:
    return conn.execute(sa.select(cursors.c.position).where(cursors.c.name == name)).scalar()


def set_cursor(conn: Connection, name: str, position: float) -> None:
    """Insert or move the cursor in one statement, so two writers never both insert it."""
    statement = _insert(conn, cursors).values(name=name, position=position)
    conn.execute(
        statement.on_conflict_do_update(index_elements=["name"], set_={"position": position})
    )


def _insert(conn: Connection, table: sa.Table):  # type: ignore[no-untyped-def]
    """The backend's INSERT, which knows ON CONFLICT (both backends support it)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
