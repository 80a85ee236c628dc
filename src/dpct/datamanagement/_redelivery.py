"""Which data-trigger firings a retraction releases, so a corrected redelivery fires.

An interval data trigger fires once per interval, when available datasets of its type
first cover the interval (the firing's key, ``interval:<start>``, makes it at most
once). Retracting a dataset of that type uncovers the interval again, and the firing
is released, so that the corrected delivery, or the corrected products made from it,
start the workflow again, when the workflow it started

- ended SUCCESS: it finished on data now withdrawn, and nothing of it is left to redo
  but all of it; or
- made datasets this retraction withdraws: its results are gone.

A workflow that did not succeed and made nothing retracted (an ingest that failed on the
corrupt file) keeps its firing: ``dpct workflow resume`` redoes its failed jobs on the
corrected delivery, and a second workflow over the same interval would do the work
twice. Dataset-mode triggers need nothing: a redelivered file is a new dataset with a
key of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from dpct.datamodel import parse_duration_ns
from dpct.storage import (
    Connection,
    DatasetRow,
    WorkflowStatus,
    active_descriptors,
    fired,
    producing_workflows,
)
from dpct.workflows import service as rms


def refire_keys(conn: Connection, retracted: Sequence[DatasetRow]) -> list[tuple[str, str]]:
    """(descriptor, key) of the interval firings that ``retracted`` datasets stood for."""
    if not retracted:
        return []
    withdrawn = producing_workflows(conn, (d.job_id for d in retracted if d.job_id is not None))
    out: list[tuple[str, str]] = []
    for row in active_descriptors(conn):
        trigger = rms.descriptor_of(row).trigger
        if trigger.kind != "data" or trigger.mode != "interval":
            continue
        length = parse_duration_ns(trigger.interval)
        keys: set[str] = set()
        for ds in retracted:
            if ds.spec.data_type != trigger.data_type:
                continue
            first = ds.spec.start_ns - ds.spec.start_ns % length
            keys.update(f"interval:{s}" for s in range(first, ds.spec.end_ns, length))
        out.extend(
            (row.name, key)
            for key, workflow_id, status in fired(conn, row.name, keys)
            if status == WorkflowStatus.SUCCESS or workflow_id in withdrawn
        )
    return out
