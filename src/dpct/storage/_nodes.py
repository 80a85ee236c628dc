"""Node monitor rows: every component's NAME, STATUS UP/DOWN and last heartbeat."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._database import serialize_on
from dpct.storage._events import add_events
from dpct.storage._records import NodeRow
from dpct.storage._schema import nodes


def node_up(
    conn: Connection, *, name: str, role: str, host: str, pid: int, slots: int, now: float
) -> None:
    """Mark a component UP (insert or take over its row) and record the event."""
    values = {
        "role": role,
        "status": "UP",
        "host": host,
        "pid": pid,
        "slots": slots,
        "started_at": now,
        "heartbeat_at": now,
    }
    updated = conn.execute(sa.update(nodes).where(nodes.c.name == name).values(**values))
    if updated.rowcount == 0:
        conn.execute(sa.insert(nodes).values(name=name, **values))
    add_events(
        conn, now, [("PFS", "node.up", "node", name, f"{role} {name} up on {host} pid {pid}")]
    )


def set_node_role(conn: Connection, name: str, role: str, now: float, message: str) -> None:
    """Change a component's role (a coordinator going active or standing by), with an event."""
    conn.execute(sa.update(nodes).where(nodes.c.name == name).values(role=role))
    add_events(conn, now, [("PFS", "node.role", "node", name, message)])


def live_node(conn: Connection, name: str, now: float, silent_after_s: float) -> NodeRow | None:
    """The row of ``name`` if it is UP and heard from within ``silent_after_s``."""
    row = conn.execute(
        sa.select(nodes).where(
            nodes.c.name == name,
            nodes.c.status == "UP",
            nodes.c.heartbeat_at >= now - silent_after_s,
        )
    ).first()
    return None if row is None else NodeRow(**row._mapping)


def claim_node_name(
    conn: Connection,
    wanted: str,
    *,
    numbered: bool,
    now: float,
    silent_after_s: float,
    gone: Callable[[NodeRow], bool],
) -> tuple[str, NodeRow | None]:
    """The row a starting component may take, so that two live ones never share a row.

    ``wanted`` unless a live component (UP, recently heard from, and not ``gone``: its
    process still exists) holds it. Then, when ``numbered``, the first free of
    ``wanted.2``, ``wanted.3`` …; otherwise ``(wanted, holder)`` for the caller to refuse.
    Call it, then ``node_up``, in one write transaction.
    """
    serialize_on(conn, "node-names")
    for k in count(1):
        name = wanted if k == 1 else f"{wanted}.{k}"
        holder = live_node(conn, name, now, silent_after_s)
        if holder is None or gone(holder):
            return name, None
        if not numbered:
            return wanted, holder
    raise AssertionError("unreachable")


def node_heartbeat(conn: Connection, name: str, now: float) -> None:
    conn.execute(sa.update(nodes).where(nodes.c.name == name).values(heartbeat_at=now, status="UP"))


def node_down(conn: Connection, name: str, now: float, reason: str) -> None:
    result = conn.execute(
        sa.update(nodes).where(nodes.c.name == name, nodes.c.status == "UP").values(status="DOWN")
    )
    if result.rowcount:
        add_events(conn, now, [("PFS", "node.down", "node", name, f"{name} down: {reason}")])


def mark_silent_nodes_down(conn: Connection, now: float, silent_after_s: float) -> list[str]:
    """DOWN for every UP component whose last heartbeat is older than ``silent_after_s``."""
    stale = [
        row.name
        for row in conn.execute(
            sa.select(nodes.c.name).where(
                nodes.c.status == "UP", nodes.c.heartbeat_at < now - silent_after_s
            )
        )
    ]
    for name in stale:
        node_down(conn, name, now, f"no heartbeat for {silent_after_s:g} s")
    return stale


def list_nodes(conn: Connection) -> Sequence[NodeRow]:
    return [NodeRow(**r._mapping) for r in conn.execute(sa.select(nodes).order_by(nodes.c.name))]
