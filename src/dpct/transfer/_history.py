"""Reading recorded transfers: the list, and one transfer with what it started."""

from __future__ import annotations

from dataclasses import dataclass

from dpct.errors import NotFound
from dpct.storage import (
    Database,
    TransferFileRow,
    TransferRow,
    WorkflowRow,
    get_transfer,
    list_transfers,
    transfer_files_of,
    workflows_of_transfer,
)
from dpct.transfer._recovery import recover_stale_transfers


@dataclass(frozen=True, slots=True)
class TransferView:
    """One transfer with its files and the workflows its data started."""

    transfer: TransferRow
    files: list[TransferFileRow]
    workflows: list[WorkflowRow]


def transfers(
    db: Database,
    *,
    direction: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[TransferRow]:
    """Transfers, newest first; RUNNING ones whose process is gone are failed first."""
    recover_stale_transfers(db)
    with db.read() as conn:
        return list_transfers(conn, direction=direction, status=status, limit=limit)


def transfer(db: Database, transfer_id: int) -> TransferView:
    """A transfer with its files and the workflows that its datasets triggered."""
    with db.read() as conn:
        row = get_transfer(conn, transfer_id)
        if row is None:
            raise NotFound(
                f"transfer {transfer_id} does not exist; list them with `dpct transfer list`"
            )
        return TransferView(
            row, transfer_files_of(conn, transfer_id), workflows_of_transfer(conn, transfer_id)
        )
