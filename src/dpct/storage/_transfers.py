"""DTS bookkeeping: transfers, the fate of each file, and what a transfer set in motion.

A transfer row's counters are kept by :func:`record_transfer_file` in the transaction
that records the file, so they always agree with ``transfer_files``. Events for a file
that was not registered are written there too: whoever looks at the event log sees every
file a delivery brought, registered or not (registrations emit ``dataset.registered``).

Claims (``transfer_claims``) give one running pull at a time the bytes of a file (its
checksum and type): it alone fetches, stores and registers them, and it gives them up
when it registers them or finishes, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._records import (
    LOST_DATASET_STATES,
    DatasetRow,
    DatasetState,
    TransferClaimRow,
    TransferFileRow,
    TransferFileStatus,
    TransferRow,
    TransferStatus,
    WorkflowRow,
)
from dpct.storage._schema import (
    datasets,
    transfer_claims,
    transfer_files,
    transfers,
    workflows,
)
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
    host: str = "",
    pid: int = 0,
    pid_start: int | None = None,
) -> int:
    """Open a RUNNING transfer of ``files`` files, ``nbytes`` bytes in all; returns its id.

    ``host``, ``pid`` and ``pid_start`` name the process that runs it, so that another
    can tell when it is gone.
    """
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
                host=host,
                pid=pid,
                pid_start=pid_start,
                heartbeat_at=now,
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
) -> bool:
    """Close a RUNNING transfer and give up its claims; False if it was closed already.

    FAILED emits ``transfer.failed``, others ``transfer.finished``. A transfer that
    recovery marked FAILED stays so: a process that was thought dead cannot undo that.
    """
    status = TransferStatus(status)
    if status == TransferStatus.RUNNING:
        raise ValueError("a transfer is finished as DONE, PARTIAL or FAILED, not RUNNING")
    closed = conn.execute(
        sa.update(transfers)
        .where(transfers.c.id == transfer_id, transfers.c.status == TransferStatus.RUNNING)
        .values(status=status, ended_at=now, message=message)
    ).rowcount
    if not closed:
        return False
    conn.execute(
        sa.delete(transfer_claims).where(
            transfer_claims.c.transfer_id == transfer_id, transfer_claims.c.location == ""
        )
    )
    kind = "transfer.failed" if status == TransferStatus.FAILED else "transfer.finished"
    add_events(
        conn, now, [("DTS", kind, "transfer", transfer_id, f"{status}: {message}".rstrip(": "))]
    )
    return True


def beat_transfer(conn: Connection, transfer_id: int, now: float) -> bool:
    """Note that a transfer's process is alive; False once it is no longer RUNNING.

    On PostgreSQL the update also locks the row until the transaction ends, so a
    registration that begins with it cannot interleave with recovery failing it.
    """
    return bool(
        conn.execute(
            sa.update(transfers)
            .where(transfers.c.id == transfer_id, transfers.c.status == TransferStatus.RUNNING)
            .values(heartbeat_at=now)
        ).rowcount
    )


def running_transfers(conn: Connection) -> list[TransferRow]:
    """Every RUNNING transfer, oldest first (few: one per pull, push or watcher)."""
    query = (
        sa.select(transfers)
        .where(transfers.c.status == TransferStatus.RUNNING)
        .order_by(transfers.c.id)
    )
    return [_transfer_row(r) for r in conn.execute(query)]


# ---------------------------------------------------------------- claims --------------

ClaimKey = tuple[str, str]
"""(checksum, data type): what a claim holds."""


@dataclass(slots=True)
class Claimed:
    """What :func:`claim_files` found: bytes registered already, and claims of others.

    When ``held`` is not empty nothing was claimed (all or nothing, so a pull that waits
    holds no claim another could be waiting for: no deadlock).
    """

    registered: dict[ClaimKey, DatasetRow] = field(default_factory=dict)
    held: dict[ClaimKey, int] = field(default_factory=dict)


def _claims_on(conn: Connection, keys: Sequence[ClaimKey]) -> dict[ClaimKey, int]:
    c = transfer_claims.c
    wanted = set(keys)
    found: dict[ClaimKey, int] = {}
    checksums = sorted({k[0] for k in keys})
    for i in range(0, len(checksums), 500):
        query = sa.select(c.checksum, c.data_type, c.transfer_id).where(
            c.checksum.in_(checksums[i : i + 500])
        )
        for checksum, data_type, transfer_id in conn.execute(query):
            if (checksum, data_type) in wanted:
                found[(checksum, data_type)] = int(transfer_id)
    return found


def claim_files(
    conn: Connection,
    transfer_id: int,
    files: Sequence[tuple[str, str, str]],
    *,
    now: float,
) -> Claimed:
    """Claim the files ``(checksum, data_type, name)`` not yet registered, all or none.

    Claims are read before datasets: on PostgreSQL each statement sees what was committed
    when it began, and a pull registers its files and drops their claims in one
    transaction, so a claim gone by the first read means its datasets show in the second.
    """
    keys = list(dict.fromkeys((checksum, data_type) for checksum, data_type, _ in files))
    result = Claimed()
    held = _claims_on(conn, keys)
    result.held = {k: t for k, t in held.items() if t != transfer_id}
    mine = {k for k, t in held.items() if t == transfer_id}
    for key in keys:
        if key in mine:
            continue
        known = find_dataset_by_checksum(conn, *key)
        if known is not None:
            result.registered[key] = known
    if result.held:
        return result
    names = {(checksum, data_type): name for checksum, data_type, name in reversed(files)}
    rows = [
        {
            "checksum": key[0],
            "data_type": key[1],
            "transfer_id": transfer_id,
            "name": names[key],
            "location": "",
            "claimed_at": now,
        }
        for key in keys
        if key not in result.registered and key not in mine
    ]
    if rows:
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(transfer_claims), rows)
        except sa.exc.IntegrityError:
            # Another transaction claimed one of them since our read (PostgreSQL).
            result.held = {k: t for k, t in _claims_on(conn, keys).items() if t != transfer_id} or {
                keys[0]: 0
            }
    return result


def set_claim_location(conn: Connection, transfer_id: int, key: ClaimKey, location: str) -> None:
    """Write down where a claimed file goes in the store, before it is moved there."""
    c = transfer_claims.c
    done = conn.execute(
        sa.update(transfer_claims)
        .where(c.transfer_id == transfer_id, c.checksum == key[0], c.data_type == key[1])
        .values(location=location)
    ).rowcount
    if done != 1:
        raise LookupError(f"transfer {transfer_id} holds no claim on {key[1]} {key[0]}")


def release_claims(conn: Connection, transfer_id: int, keys: Iterable[ClaimKey]) -> int:
    """Drop these claims of a transfer; returns how many it held."""
    c = transfer_claims.c
    released = 0
    for checksum, data_type in keys:
        released += conn.execute(
            sa.delete(transfer_claims).where(
                c.transfer_id == transfer_id, c.checksum == checksum, c.data_type == data_type
            )
        ).rowcount
    return released


def claims_of(conn: Connection, transfer_id: int) -> list[TransferClaimRow]:
    c = transfer_claims.c
    query = sa.select(transfer_claims).where(c.transfer_id == transfer_id).order_by(c.name)
    return [TransferClaimRow(**r._mapping) for r in conn.execute(query)]


def abandoned_claims(conn: Connection) -> list[TransferClaimRow]:
    """Claims whose transfer is no longer RUNNING: left by a crash, to be cleaned up."""
    c = transfer_claims.c
    query = (
        sa.select(transfer_claims)
        .join(transfers, transfers.c.id == c.transfer_id)
        .where(transfers.c.status != TransferStatus.RUNNING)
        .order_by(c.transfer_id, c.name)
    )
    return [TransferClaimRow(**r._mapping) for r in conn.execute(query)]


def is_registered_location(conn: Connection, location: str) -> bool:
    """Whether a dataset row points at ``location`` (then its file must stay)."""
    query = sa.select(datasets.c.id).where(datasets.c.location == location).limit(1)
    return conn.execute(query).first() is not None


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
