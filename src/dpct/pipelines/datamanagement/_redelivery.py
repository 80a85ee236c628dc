"""Which data-trigger firings a retraction releases, so a corrected redelivery fires.

An interval data trigger fires once per interval, when available datasets of its type
first cover the interval (the firing's key, ``interval:<start>``, makes it at most
once). Retracting a dataset of that type uncovers the interval again: the firing no
longer stands for anything true, and keeping it would stop the corrected delivery, or
the corrected products made from it, from starting the workflow again. Dataset-mode
triggers need nothing: a redelivered file is a new dataset with a key of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from dpct.datamodel import parse_duration_ns
from dpct.storage import DatasetRow, active_descriptors
from dpct.storage._firings import fired_keys
from dpct.workflows import service as rms


def refire_keys(conn: Connection, retracted: Sequence[DatasetRow]) -> list[tuple[str, str]]:
    """(descriptor, key) of the interval firings that ``retracted`` datasets stood for."""
    if not retracted:
        return []
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
        out.extend((row.name, key) for key in fired_keys(conn, row.name, keys))
    return out
