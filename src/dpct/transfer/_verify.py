"""Whether a fetched file may be registered: the checks it passes first, or why not."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dpct.datamodel import DATA_TYPES, DataSpec, DataType
from dpct.errors import DpctError, SchemaMismatch, UnknownDataType
from dpct.mission.delivery import ManifestEntry


class Rejected(Exception):
    """Why a fetched file cannot be registered (the quarantine reason)."""


def verify(entry: ManifestEntry, path: Path, size: int, checksum: str) -> tuple[DataType, DataSpec]:
    """The type and spec of a fetched file fit to register, or Rejected with the reason.

    The Parquet check reads the footer only: the bytes were hashed on the way in.
    """
    if size < entry.bytes:
        raise Rejected(f"truncated: {size} of {entry.bytes} bytes arrived")
    if size > entry.bytes:
        raise Rejected(f"size mismatch: longer than the {entry.bytes} bytes listed")
    if checksum != entry.checksum:
        raise Rejected(f"checksum mismatch: received {checksum}, manifest says {entry.checksum}")
    try:
        data_type = DATA_TYPES.get(entry.data_type)
    except UnknownDataType as err:
        raise Rejected(f"unknown data type: {err}") from err
    try:
        spec = entry.spec.to_spec()
    except DpctError as err:
        raise Rejected(f"bad spec: {err}") from err
    if spec.data_type != entry.data_type:
        raise Rejected(
            f"bad spec: the spec is of type {spec.data_type!r}, the file of {entry.data_type!r}"
        )
    try:
        with pq.ParquetFile(path) as parquet:
            schema = parquet.schema_arrow
            rows = parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as err:
        raise Rejected(f"unreadable: not a Parquet file ({err})") from err
    try:
        data_type.conform(schema.empty_table(), where=entry.file)
    except SchemaMismatch as err:
        raise Rejected(f"wrong schema: {err}") from err
    if rows != entry.rows:
        raise Rejected(f"row count mismatch: the file holds {rows}, manifest says {entry.rows}")
    return data_type, spec
