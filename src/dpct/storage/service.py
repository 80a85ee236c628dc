"""DSS service functions: what the CLI and the console call to look at products."""

from __future__ import annotations

from dpct.errors import NotFound
from dpct.storage._database import Database
from dpct.storage._datasets import get_dataset, list_datasets
from dpct.storage._records import DatasetRow


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
