"""DSS service functions: what the CLI and the console call to look at products."""

from __future__ import annotations

import time

from dpct.datamodel import DATA_TYPES
from dpct.errors import BadInput, NotFound
from dpct.storage._check import BadDataset as BadDataset
from dpct.storage._check import OrphanFile as OrphanFile
from dpct.storage._check import StoreCheckReport as StoreCheckReport
from dpct.storage._check import check_store as check_store
from dpct.storage._database import Database
from dpct.storage._datasets import get_dataset, list_datasets
from dpct.storage._records import DatasetRow, DatasetState
from dpct.storage._retention import due_for_deletion, list_retention, mark_deleted, set_retention
from dpct.storage._store import delete_product


def datasets(db: Database, *, data_type: str | None = None, limit: int = 100) -> list[DatasetRow]:
    """Registered datasets, newest first, optionally of one data type."""
    with db.read() as conn:
        return list_datasets(conn, data_type=data_type, limit=limit)


def dataset(db: Database, dataset_id: int) -> DatasetRow:
    with db.read() as conn:
        row = get_dataset(conn, dataset_id)
    if row is None:
        raise NotFound(f"dataset {dataset_id} does not exist; list them with `dpct datasets`")
    return row


def retention(db: Database) -> dict[str, float]:
    """Retention rules: data type → days its files are kept after registration."""
    with db.read() as conn:
        return list_retention(conn)


def set_retention_rule(db: Database, data_type: str, keep_days: float | None) -> None:
    DATA_TYPES.get(data_type)  # an unknown type is refused by name
    if keep_days is not None and keep_days < 0:
        raise BadInput(f"retention for {data_type!r} must be ≥ 0 days, not {keep_days:g}")
    with db.write() as conn:
        set_retention(conn, data_type, keep_days)


def prune(db: Database, *, now: float | None = None, dry_run: bool = False) -> list[DatasetRow]:
    """Delete the files of every dataset past its type's retention; returns them.

    Rows are marked in one transaction, files removed after it commits.
    """
    now = time.time() if now is None else now
    with db.write() as conn:
        due = due_for_deletion(conn, now)
        if dry_run or not due:
            return due
        marked: set[int] = set()
        for state in (DatasetState.AVAILABLE, DatasetState.SUPERSEDED):
            ids = [d.id for d in due if d.state == state]
            marked.update(mark_deleted(conn, ids, now, "retention", from_state=state))
    due = [d for d in due if d.id in marked]
    for dataset in due:
        delete_product(dataset.location)
    return due
