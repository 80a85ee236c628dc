"""Reading the event log."""

from __future__ import annotations

from dpct.storage import Database, EventRow, list_events


def events(
    db: Database,
    *,
    limit: int = 100,
    kind: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    after_id: int = 0,
    newest_first: bool = True,
) -> list[EventRow]:
    """Events, newest first; ``kind`` may end in ``*`` (e.g. ``job.*``)."""
    with db.read() as conn:
        return list(
            list_events(
                conn,
                limit=limit,
                kind=kind,
                object_type=object_type,
                object_id=object_id,
                after_id=after_id,
                newest_first=newest_first,
            )
        )
