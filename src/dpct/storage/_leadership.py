"""The coordinator's leadership lease: one row says which coordinator is active.

Coordinators may run on several hosts for availability; exactly one acts (reaps leases,
fires triggers), the others stand by. The row holds the active one's token and an
expiry it renews every tick. A standby takes the row only once that expiry has passed,
so a coordinator that was SIGKILLed, lost its host or hung is replaced after one lease,
and the database (not a file or a host) decides, which works across hosts on PostgreSQL
and across processes on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._database import serialize_on
from dpct.storage._events import add_events
from dpct.storage._schema import coordinator_lease

_ROW = 1


@dataclass(frozen=True, slots=True)
class Leader:
    """Who holds the leadership lease, and until when."""

    holder: str
    token: str
    host: str
    pid: int
    since: float
    expires_at: float


def current_leader(conn: Connection) -> Leader | None:
    row = conn.execute(sa.select(coordinator_lease).where(coordinator_lease.c.id == _ROW)).first()
    if row is None:
        return None
    m = row._mapping
    return Leader(m["holder"], m["token"], m["host"], m["pid"], m["since"], m["expires_at"])


def hold_leadership(
    conn: Connection,
    *,
    holder: str,
    token: str,
    host: str,
    pid: int,
    now: float,
    lease_s: float,
) -> tuple[bool, Leader | None]:
    """Renew the lease if ``token`` holds it, or take it if it lapsed or was released.

    Returns whether ``token`` now holds it, and the holder as it stood before this call
    (None when nobody did), so the caller can tell a renewal from a takeover. Call it
    in a write transaction: PostgreSQL serialises it on an advisory lock, SQLite on its
    write lock, so two coordinators never both take a lapsed lease.
    """
    serialize_on(conn, "coordinator-leadership")
    before = current_leader(conn)
    if before is not None and before.token != token and before.expires_at > now:
        return False, before
    values = {
        "holder": holder,
        "token": token,
        "host": host,
        "pid": pid,
        "expires_at": now + lease_s,
    }
    this_row = coordinator_lease.c.id == _ROW
    if before is not None and before.token == token:
        conn.execute(sa.update(coordinator_lease).where(this_row).values(expires_at=now + lease_s))
        return True, before
    if before is None:
        conn.execute(sa.insert(coordinator_lease).values(id=_ROW, since=now, **values))
    else:
        conn.execute(sa.update(coordinator_lease).where(this_row).values(since=now, **values))
    after = "" if before is None else f", after {before.holder} ({before.host} pid {before.pid})"
    message = f"{holder} on {host} pid {pid} is the active coordinator{after}"
    add_events(conn, now, [("PFS", "coordinator.active", "node", holder, message)])
    return True, before


def release_leadership(conn: Connection, token: str) -> bool:
    """Give the lease up at a clean stop, so that a standby takes over at its next tick."""
    result = conn.execute(
        sa.update(coordinator_lease)
        .where(coordinator_lease.c.id == _ROW, coordinator_lease.c.token == token)
        .values(expires_at=0.0)
    )
    return bool(result.rowcount)
