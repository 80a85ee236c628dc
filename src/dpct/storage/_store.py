"""The product store: typed Parquet files under one root, local or on an object store.

The root is an fsspec URL (a folder, ``s3://bucket/prefix``, ``memory://…``), so the
same code serves a laptop and a DPC's object storage. Files are partitioned by data type
and day and always appear whole: on a local disk through a temporary name, fsync and
rename; on an object store because an upload becomes visible only when it completes.
A location stored in the database is the file's full path or URL.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
import fsspec.config
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from dpct.checksums import sha256_file, sha256_stream
from dpct.datamodel import DATA_TYPES, DataSpec, day_of, product_name
from dpct.errors import BadInput, SchemaMismatch
from dpct.storage._records import OutputFile

TMP_SUFFIX = ".tmp"
"""Appended to a product's name while it is written (local stores): ``….parquet.tmp``.
Since a job's product name carries its job, attempt and lease token, so does its
temporary name: a leftover tells whose write was cut short."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file found under a store's root (see ``ProductStore.files``)."""

    location: str
    bytes: int
    modified: float | None
    """Last modification (epoch seconds); None where the filesystem does not say."""


def _modified(info: dict[str, Any]) -> float | None:
    """The modification time in an fsspec ``info`` dict, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_options(protocol: str) -> dict[str, Any]:
    """``FSSPEC_<PROTOCOL>_<OPTION>`` variables as they are now (fsspec reads them once)."""
    found: dict[str, dict[str, Any]] = {}
    fsspec.config.set_conf_env(found, os.environ)
    return found.get(protocol, {})


def open_filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """An fsspec filesystem and path for a folder URL or local path.

    Options such as ``FSSPEC_S3_ENDPOINT_URL`` (MinIO, Ceph, a test server) and the usual
    AWS variables are read now, not only when fsspec was first imported.
    """
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        return fsspec.core.url_to_fs(url, **_storage_options(protocol))
    except (ImportError, ValueError) as err:
        raise BadInput(f"cannot open {url!r}: {err}") from err


class ProductStore:
    """Product files under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: str | Path) -> None:
        self.root_url = str(root)
        self.fs, root_path = open_filesystem(self.root_url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = root_path.rstrip("/") if not self.local else str(Path(root_path).resolve())

    def __repr__(self) -> str:
        return f"ProductStore({self.root_url!r})"

    # ---------------------------------------------------------------- locations ---
    def location_for(self, spec: DataSpec, tag: str) -> str:
        """``root/<type>/day=<day>/<product name>``, as stored in ``datasets.location``."""
        path = f"{self.root}/{spec.data_type}/day={day_of(spec.start_ns)}/"
        return self._url(path + product_name(spec, tag))

    @property
    def root_location(self) -> str:
        """The root as locations start with it (every location is ``root_location/…``)."""
        return self._url(self.root)

    def _url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _path(self, location: str) -> str:
        return location if self.local else self.fs._strip_protocol(location)

    def exists(self, location: str) -> bool:
        return bool(self.fs.exists(self._path(location)))

    def size(self, location: str) -> int:
        return int(self.fs.size(self._path(location)))

    # ---------------------------------------------------------------- writing -----
    def write(self, table: pa.Table, spec: DataSpec, tag: str, *, name: str = "") -> OutputFile:
        """Write ``table`` (conformed to ``spec``'s data type) whole; return its record."""
        data_type = DATA_TYPES.get(spec.data_type)
        location = self.location_for(spec, tag)
        table = data_type.conform(table, where=location)
        if self.local:
            with self._local_atomic(location) as tmp:
                pq.write_table(table, tmp, compression="zstd")
            checksum = "sha256:" + sha256_file(location)
            size = os.path.getsize(location)
        else:
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="zstd")
            data = buffer.getvalue()
            checksum = "sha256:" + hashlib.sha256(data).hexdigest()
            size = len(data)
            self.fs.makedirs(self.fs._parent(self._path(location)), exist_ok=True)
            self.fs.pipe_file(self._path(location), data)
        return OutputFile(
            name=name or spec.data_type,
            data_type=spec.data_type,
            type_version=data_type.version,
            spec=spec,
            rows=table.num_rows,
            bytes=size,
            checksum=checksum,
            location=location,
        )

    def put(self, source: str | Path, spec: DataSpec, tag: str) -> str:
        """Move or upload a verified local file into the store; returns its location.

        A file on the same local filesystem is renamed (no copy); otherwise it is copied
        (locally through a temporary name) or uploaded, and the source is left in place.
        """
        location = self.location_for(spec, tag)
        if self.local:
            with self._local_atomic(location) as tmp:
                try:
                    os.replace(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
                # A rename keeps the staged file's age; the store check's grace period
                # counts from the file's arrival here, so the file must look new.
                os.utime(tmp)
        else:
            self.fs.makedirs(self.fs._parent(self._path(location)), exist_ok=True)
            self.fs.put_file(str(source), self._path(location))
        return location

    @contextmanager
    def _local_atomic(self, location: str) -> Iterator[str]:
        """Yield a temporary path; on success it is fsynced and renamed to ``location``."""
        final = Path(location)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        try:
            yield str(tmp)
            # Durable before it is registered: a database row must never outlive its bytes.
            _fsync(tmp)
            os.replace(tmp, final)
            _fsync(final.parent)
        finally:
            tmp.unlink(missing_ok=True)

    # ---------------------------------------------------------------- listing -----
    def files(self) -> Iterator[StoredFile]:
        """Every file under the root, temporary ones included, in no particular order."""
        if not self.fs.exists(self.root):
            return
        for path, info in self.fs.find(self.root, detail=True).items():
            if info.get("type", "file") == "file":
                yield StoredFile(self._url(path), int(info.get("size") or 0), _modified(info))

    # ---------------------------------------------------------------- reading -----
    def open(self, location: str) -> BinaryIO:
        return self.fs.open(self._path(location), "rb")

    def checksum(self, location: str) -> str:
        """The SHA-256 of the stored bytes, read back (``sha256:<hex>``)."""
        with self.open(location) as f:
            return sha256_stream(f)

    def read(self, location: str, data_type: str, *, ccd: int | None = None) -> pa.Table:
        """Read a product and check it against its registered schema.

        With ``ccd``, a type with a CCD column gives only that CCD's rows: Parquet's
        row-group statistics skip the groups of other CCDs unread.
        """
        expected = DATA_TYPES.get(data_type)
        filters = None
        if ccd is not None and expected.ccd_column is not None:
            filters = [(expected.ccd_column, "=", ccd)]
        try:
            with self.open(location) as f:
                table = pq.read_table(f, filters=filters)
        except (OSError, pa.ArrowInvalid) as err:
            raise SchemaMismatch(
                f"cannot read product {location} of type {data_type!r}: {err}"
            ) from err
        return expected.conform(table, where=location)

    # ---------------------------------------------------------------- deleting ----
    def delete(self, location: str) -> bool:
        """Remove a file; False when it was already gone."""
        path = self._path(location)
        if not self.local and not self.fs.exists(path):
            return False  # S3 deletes of a missing key succeed silently
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def discard(self, location: str) -> None:
        """Remove a file and the temporary file of a write to it that was cut short."""
        self.delete(location)
        if self.local:
            Path(location + TMP_SUFFIX).unlink(missing_ok=True)


def store_at(root: str | Path) -> ProductStore:
    """The store at ``root``: cheap, since fsspec caches its filesystem objects.

    Not cached here: an object store's settings (endpoint, credentials) come from the
    environment and must be read afresh.
    """
    return ProductStore(root)


def store_for(location: str) -> ProductStore:
    """A store that can reach ``location`` (any fsspec URL or local path)."""
    if "://" in location:
        return store_at(location.split("://", 1)[0] + "://")
    return store_at("/")


def read_product(location: str, data_type: str, *, ccd: int | None = None) -> pa.Table:
    """Read a product wherever its location points and check its schema."""
    return store_for(location).read(location, data_type, ccd=ccd)


def delete_product(location: str) -> bool:
    return store_for(location).delete(location)
