"""PFS service functions: the node monitor."""

from __future__ import annotations

from dpct.storage import Database, NodeRow, list_nodes


def nodes(db: Database) -> list[NodeRow]:
    """Every component's NAME, STATUS UP/DOWN and DATE of last heartbeat."""
    with db.read() as conn:
        return list(list_nodes(conn))
