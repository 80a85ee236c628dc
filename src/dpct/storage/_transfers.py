"""DTS bookkeeping: transfers, the fate of each file, and what a transfer set in motion.

A transfer row's counters are kept by :func:`record_transfer_file` in the transaction
that records the file, so they always agree with ``transfer_files``. Events for a file
that was not registered are written there too: whoever looks at the event log sees every
file a delivery brought, registered or not (registrations emit ``dataset.registered``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._records import (
    LOST_DATASET_STATES,
    DatasetRow,
    DatasetState,
    TransferFileRow,
    TransferFileStatus,
    TransferRow,
    TransferStatus,
    WorkflowRow,
)
from dpct.storage._schema import datasets, transfer_files, transfers, workflows
from dpct.storage._workflows import _workflow_row

_COUNTER = {
    TransferFileStatus.REGISTERED: "registered",
    TransferFileStatus.DUPLICATE: "duplicates",
    TransferFileStatus.QUARANTINED: "quarantined",
}


def start_transfer(
    conn: Connection,
    *,
    direction: str,
    peer: str,
    files: int,
    nbytes: int,
    now: float,
    message: str = "",
) -> int:
    """Open a RUNNING transfer of ``files`` files, ``nbytes`` bytes in all; returns its id."""
    if direction not in ("pull", "push"):
        raise ValueError(f"direction must be 'pull' or 'push', not {direction!r}")
    transfer_id = int(
        conn.execute(
            sa.insert(transfers)
            .values(
                direction=direction,
                peer=peer,
                status=TransferStatus.RUNNING,
                files=files,
                bytes=nbytes,
                registered=0,
                duplicates=0,
                quarantined=0,
                started_at=now,
                ended_at=None,
                message=message,
            )
            .returning(transfers.c.id)
        ).scalar_one()
    )
    verb = "from" if direction == "pull" else "to"
    add_events(
        conn,
        now,
        [
            (
                "DTS",
                "transfer.started",
                "transfer",
                transfer_id,
                f"{direction} {verb} {peer}: {files} files, {nbytes} bytes",
            )
        ],
    )
    return transfer_id


def record_transfer_file(
    conn: Connection,
    transfer_id: int,
    *,
    name: str,
    data_type: str,
    nbytes: int,
    checksum: str,
    status: str,
    now: float,
    reason: str = "",
    dataset_id: int | None = None,
    location: str = "",
) -> TransferFileRow:
    """Record what became of one file and count it on its transfer."""
    status = TransferFileStatus(status)
    values = {
        "transfer_id": transfer_id,
        "name": name,
        "data_type": data_type,
        "bytes": nbytes,
        "checksum": checksum,
        "status": status,
        "reason": reason,
        "dataset_id": dataset_id,
        "location": location,
    }
    file_id = int(
        conn.execute(
            sa.insert(transfer_files).values(**values).returning(transfer_files.c.id)
        ).scalar_one()
    )
    counter = _COUNTER.get(status)
    if counter is not None:
        column = transfers.c[counter]
        conn.execute(
            sa.update(transfers).where(transfers.c.id == transfer_id).values({column: column + 1})
        )
    if status == TransferFileStatus.QUARANTINED:
        add_events(
            conn,
            now,
            [("DTS", "transfer.quarantined", "transfer", transfer_id, f"{name}: {reason}")],
        )
    elif status == TransferFileStatus.DUPLICATE:
        add_events(
            conn,
            now,
            [("DTS", "transfer.duplicate", "transfer", transfer_id, f"{name}: {reason}")],
        )
    return TransferFileRow(
        id=file_id,
        transfer_id=transfer_id,
        name=name,
        data_type=data_type,
        bytes=nbytes,
        checksum=checksum,
        status=status,
        reason=reason,
        dataset_id=dataset_id,
        location=location,
    )


def finish_transfer(
    conn: Connection, transfer_id: int, *, status: str, now: float, message: str = ""
) -> None:
    """Close a transfer; FAILED emits ``transfer.failed``, others ``transfer.finished``."""
    status = TransferStatus(status)
    if status == TransferStatus.RUNNING:
        raise ValueError("a transfer is finished as DONE, PARTIAL or FAILED, not RUNNING")
    conn.execute(
        sa.update(transfers)
        .where(transfers.c.id == transfer_id)
        .values(status=status, ended_at=now, message=message)
    )
    kind = "transfer.failed" if status == TransferStatus.FAILED else "transfer.finished"
    add_events(
        conn, now, [("DTS", kind, "transfer", transfer_id, f"{status}: {message}".rstrip(": "))]
    )


def _transfer_row(row: sa.Row) -> TransferRow:
    return TransferRow(**row._mapping)


def get_transfer(conn: Connection, transfer_id: int) -> TransferRow | None:
    row = conn.execute(sa.select(transfers).where(transfers.c.id == transfer_id)).first()
    return _transfer_row(row) if row else None


def list_transfers(
    conn: Connection,
    *,
    direction: str | None = None,
    peer: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[TransferRow]:
    """Transfers, newest first."""
    t = transfers.c
    query = sa.select(transfers).order_by(t.id.desc()).limit(limit)
    if direction:
        query = query.where(t.direction == direction)
    if peer:
        query = query.where(t.peer == peer)
    if status:
        query = query.where(t.status == status)
    return [_transfer_row(r) for r in conn.execute(query)]


def transfer_files_of(conn: Connection, transfer_id: int) -> list[TransferFileRow]:
    """The files of a transfer, in the order they were recorded."""
    query = (
        sa.select(transfer_files)
        .where(transfer_files.c.transfer_id == transfer_id)
        .order_by(transfer_files.c.id)
    )
    return [TransferFileRow(**r._mapping) for r in conn.execute(query)]


def pulled_peers(conn: Connection, peers: Sequence[str]) -> set[str]:
    """Those of ``peers`` that a finished pull (DONE or PARTIAL) already took in.

    A FAILED pull is not counted, so a watcher tries that delivery again.
    """
    if not peers:
        return set()
    t = transfers.c
    done: set[str] = set()
    # Bounded IN lists: a watched folder may hold thousands of deliveries.
    for i in range(0, len(peers), 500):
        query = (
            sa.select(t.peer)
            .distinct()
            .where(
                t.direction == "pull",
                t.status.in_([TransferStatus.DONE, TransferStatus.PARTIAL]),
                t.peer.in_(list(peers[i : i + 500])),
            )
        )
        done.update(conn.execute(query).scalars())
    return done


def find_dataset_by_checksum(conn: Connection, checksum: str, data_type: str) -> DatasetRow | None:
    """A dataset holding these exact bytes as this type, unless only deleted ones remain.

    Retracted datasets count: re-delivering retracted data must not bring it back
    silently. Deleted ones (files gone by retention) do not, nor do those the store check
    found MISSING or CORRUPT, so a re-delivery restores.
    """
    d = datasets.c
    query = (
        sa.select(datasets)
        .where(
            d.checksum == checksum,
            d.data_type == data_type,
            d.state.not_in([DatasetState.DELETED, *LOST_DATASET_STATES]),
        )
        .order_by(d.id)
        .limit(1)
    )
    row = conn.execute(query).first()
    return _dataset_row(row) if row else None


def datasets_to_push(
    conn: Connection,
    *,
    data_type: str | None = None,
    since_id: int = 0,
    dataset_ids: Iterable[int] | None = None,
    limit: int = 10_000,
) -> list[DatasetRow]:
    """Available datasets to deliver outward, oldest first."""
    d = datasets.c
    query = (
        sa.select(datasets)
        .where(d.state == DatasetState.AVAILABLE, d.id > since_id)
        .order_by(d.id)
        .limit(limit)
    )
    if data_type:
        query = query.where(d.data_type == data_type)
    if dataset_ids is not None:
        query = query.where(d.id.in_(list(dataset_ids)))
    return [_dataset_row(r) for r in conn.execute(query)]


def workflows_of_transfer(conn: Connection, transfer_id: int) -> list[WorkflowRow]:
    """Workflows that data triggers started from this transfer's datasets."""
    query = (
        sa.select(workflows).where(workflows.c.transfer_id == transfer_id).order_by(workflows.c.id)
    )
    return [_workflow_row(r) for r in conn.execute(query)]
