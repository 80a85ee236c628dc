"""Deleting the files of retracted datasets: rows first, files after the commit."""

from __future__ import annotations

from dataclasses import dataclass

from dpct.storage import (
    Connection,
    Database,
    DatasetRow,
    DatasetState,
    delete_product,
    mark_deleted,
    retracted_datasets,
)

_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Cleaned:
    dataset: DatasetRow
    file_removed: bool
    """False when the file was already gone, or could not be removed (see ``error``)."""
    error: str = ""


def remove_file(dataset: DatasetRow) -> Cleaned:
    """Remove a dataset's file whose row is already DELETED; a failure is reported, not raised.

    Raising would stop the files after it from being removed, and nothing would come
    back for them: their rows are DELETED already.
    """
    try:
        return Cleaned(dataset, delete_product(dataset.location))
    except OSError as err:
        return Cleaned(dataset, False, f"{type(err).__name__}: {err}")


def clean_retracted(
    db: Database, start_ns: int | None, end_ns: int | None, now: float
) -> list[Cleaned]:
    """Delete RETRACTED datasets overlapping ``[start_ns, end_ns)`` (any type); returns them.

    The rows become DELETED in one transaction and the files go after it commits, so a
    crash leaves at worst an orphan file, never a row that points at nothing. A dataset
    that another cleaner claimed first is left to that cleaner.
    """

    def claim(conn: Connection) -> list[DatasetRow]:
        found = retracted_datasets(conn, start_ns, end_ns)
        ids = [d.id for d in found]
        marked: set[int] = set()
        for first in range(0, len(ids), _BATCH):
            marked.update(
                mark_deleted(
                    conn,
                    ids[first : first + _BATCH],
                    now,
                    "retracted; file deleted by the retraction cleaning",
                    from_state=DatasetState.RETRACTED,
                )
            )
        return [d for d in found if d.id in marked]

    claimed = db.run_write(claim)
    return [remove_file(d) for d in claimed]
