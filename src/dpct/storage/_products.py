"""Product files: typed Parquet tables with exactly their data type's schema.

A file is written under a temporary name and renamed into place, so a reader never
sees half a file; its SHA-256 is computed from the bytes written.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dpct.datamodel import DATA_TYPES, DataSpec, day_of
from dpct.errors import SchemaMismatch
from dpct.storage._records import OutputFile


def product_path(root: Path, spec: DataSpec, tag: str) -> Path:
    """``root/<type>/day=<day>/<type>_<start>_<end>[_cN][_fN]_<tag>.parquet``."""
    name = f"{spec.data_type}_{spec.start_ns}_{spec.end_ns}"
    if spec.ccd is not None:
        name += f"_c{spec.ccd}"
    if spec.fov is not None:
        name += f"_f{spec.fov}"
    return root / spec.data_type / f"day={day_of(spec.start_ns)}" / f"{name}_{tag}.parquet"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_product(table: pa.Table, spec: DataSpec, path: Path, *, name: str = "") -> OutputFile:
    """Write ``table`` (conformed to ``spec``'s data type) atomically to ``path``."""
    data_type = DATA_TYPES.get(spec.data_type)
    table = data_type.conform(table, where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    # Durable before it is registered: the database row must never outlive the bytes.
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
    return OutputFile(
        name=name or spec.data_type,
        data_type=spec.data_type,
        type_version=data_type.version,
        spec=spec,
        rows=table.num_rows,
        bytes=path.stat().st_size,
        checksum="sha256:" + sha256_file(path),
        location=str(path),
    )


def read_product(location: str, data_type: str) -> pa.Table:
    """Read a product and check it against its registered schema."""
    expected = DATA_TYPES.get(data_type)
    try:
        table = pq.read_table(location)
    except (OSError, pa.ArrowInvalid) as err:
        raise SchemaMismatch(
            f"cannot read product {location} of type {data_type!r}: {err}"
        ) from err
    return expected.conform(table, where=location)
